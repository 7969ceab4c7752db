"""The generic push-to-pull bridge, without any framework."""

from __future__ import annotations

import gc
import signal
import threading
import traceback
import weakref
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest

from fitstream import pipe
from fitstream.bridge import Emitter, PushStream, StreamAborted
from fitstream.pipeline import upstream


class Producer:
    """A push-style producer that records what happened to it."""

    def __init__(self, n: int | None = None, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.emitted = 0
        self.calls = 0
        self.outcome: str | None = None
        self.reason: BaseException | None = None
        self.thread_name: str | None = None

    def __call__(self, emit: Emitter[dict[str, Any]]) -> None:
        self.calls += 1
        self.thread_name = threading.current_thread().name
        try:
            i = 0
            while self.n is None or i < self.n:
                i += 1
                if self.fail_at == i:
                    raise_from_producer(i)
                self.emitted = i
                if not emit({"step": i}):
                    self.outcome = "stopped"
                    return
            self.outcome = "exhausted"
        except StreamAborted as exc:
            self.outcome = "aborted"
            self.reason = exc.reason
            raise


def raise_from_producer(i: int) -> None:
    raise ValueError(f"producer failed at {i}")


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fitstream-bridge-")]


def test_items_arrive_in_order_and_the_stream_ends() -> None:
    producer = Producer(n=3)
    assert [ev["step"] for ev in PushStream(producer)] == [1, 2, 3]
    assert producer.outcome == "exhausted"
    assert not bridge_threads()


def test_nothing_runs_before_the_first_next() -> None:
    producer = Producer(n=3)
    items = PushStream(producer, name="lazy")
    assert producer.calls == 0
    assert not bridge_threads()
    assert next(items) == {"step": 1}
    assert producer.calls == 1
    assert producer.thread_name == "fitstream-bridge-lazy"
    items.close()


def test_producer_is_paused_while_the_consumer_holds_an_item() -> None:
    producer = Producer()
    seen = []
    with PushStream(producer) as items:
        for ev in islice(items, 4):
            # The producer has not moved past the item the consumer holds.
            seen.append((ev["step"], producer.emitted))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_close_stops_the_producer_cleanly_and_joins_its_thread() -> None:
    producer = Producer()
    items = PushStream(producer)
    next(items)
    next(items)
    items.close()
    assert producer.outcome == "stopped"
    assert producer.emitted == 2
    assert not bridge_threads()
    assert list(items) == []
    items.close()  # a second close does nothing


def test_close_before_the_first_next_never_runs_the_producer() -> None:
    producer = Producer(n=3)
    items = PushStream(producer)
    items.close()
    assert list(items) == []
    assert producer.calls == 0
    assert items.finished


def test_break_in_a_for_loop_then_dropping_the_stream_stops_the_producer() -> None:
    producer = Producer()
    for ev in PushStream(producer):
        if ev["step"] == 2:
            break
    assert producer.outcome == "stopped"
    assert not bridge_threads()


def test_an_abandoned_stream_is_freed_and_cleaned_up() -> None:
    producer = Producer()
    items = PushStream(producer)
    next(items)
    ref = weakref.ref(items)
    del items
    gc.collect()
    assert ref() is None  # the worker does not keep the consumer side alive
    assert producer.outcome == "stopped"
    assert not bridge_threads()


def test_producer_error_keeps_its_type_and_traceback() -> None:
    producer = Producer(fail_at=3)
    items = PushStream(producer)
    assert [next(items)["step"], next(items)["step"]] == [1, 2]
    with pytest.raises(ValueError, match="producer failed at 3") as info:
        next(items)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "raise_from_producer" in frames
    assert list(items) == []  # raised once, then the stream is over
    assert not bridge_threads()


def test_producer_error_while_finishing_is_raised_from_close() -> None:
    def produce(emit: Emitter[int]) -> None:
        while emit(1):
            pass
        raise OSError("could not save at the end")

    items = PushStream(produce)
    next(items)
    with pytest.raises(OSError, match="could not save at the end"):
        items.close()


def test_error_in_the_with_block_aborts_the_producer_and_reaches_the_caller() -> None:
    producer = Producer()
    error = ValueError("consumer failed")

    def consume() -> None:
        with PushStream(producer) as items:
            next(items)
            raise error

    with pytest.raises(ValueError, match="consumer failed") as info:
        consume()
    assert info.value is error
    assert producer.outcome == "aborted"
    assert producer.reason is error
    assert not bridge_threads()


def test_break_out_of_the_with_block_is_a_normal_stop() -> None:
    producer = Producer()
    with PushStream(producer) as items:
        for ev in items:
            if ev["step"] == 2:
                break
    assert producer.outcome == "stopped"


def _pass_through(events: Any) -> Iterator[dict[str, Any]]:
    # As FitStream's stages do: the stream is closed by upstream, with GeneratorExit in flight
    # (``yield from it`` would close it directly, with no exception in flight).
    with upstream(events) as it:
        for ev in it:  # noqa: UP028
            yield ev


@pytest.mark.parametrize("error", [ValueError("consumer failed"), KeyboardInterrupt()])
def test_error_in_the_with_block_aborts_the_producer_when_the_loop_runs_over_a_pipeline(
    error: BaseException,
) -> None:
    producer = Producer()

    def consume() -> None:
        with PushStream(producer) as items:
            for ev in pipe(items, _pass_through):
                if ev["step"] == 2:
                    raise error

    with pytest.raises(type(error)) as info:
        consume()
    assert info.value is error
    assert producer.outcome == "aborted"  # not "stopped": the stage's close did not win
    assert producer.reason is error
    assert not bridge_threads()


def test_a_pipeline_closed_inside_the_with_block_stops_the_producer_when_the_block_ends() -> None:
    producer = Producer()
    with PushStream(producer) as items:
        for ev in pipe(items, _pass_through):
            if ev["step"] == 2:
                break
        assert producer.outcome is None  # paused, as after a break out of a loop over items
        assert list(items) == []  # but the closed stream yields nothing more
        assert producer.outcome == "stopped"
    assert producer.emitted == 2
    assert not bridge_threads()


def test_a_pipeline_left_open_stops_normally_at_the_end_of_the_with_block() -> None:
    producer = Producer()
    with PushStream(producer) as items:
        stream = pipe(items, _pass_through)
        next(stream)
        stream.close()
        assert producer.outcome is None
    assert producer.outcome == "stopped"


def test_a_failing_stage_aborts_the_producer() -> None:
    def failing(events: Any) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for ev in it:
                if ev["step"] == 2:
                    raise KeyError("missing metric")
                yield ev

    producer = Producer()
    with pytest.raises(KeyError, match="missing metric"):
        list(pipe(PushStream(producer), failing))
    assert producer.outcome == "aborted"
    assert isinstance(producer.reason, KeyError)


def test_a_stage_that_ends_early_stops_the_producer_normally() -> None:
    def first_two(events: Any) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            yield from islice(it, 2)

    producer = Producer()
    assert len(list(pipe(PushStream(producer), first_two))) == 2
    assert producer.outcome == "stopped"


def test_closing_inside_an_unrelated_except_block_is_still_a_normal_stop() -> None:
    producer = Producer()
    try:
        raise LookupError("handled elsewhere")
    except LookupError:
        items = PushStream(producer)
        next(items)
        items.close()
    assert producer.outcome == "stopped"


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_keyboard_interrupt_while_waiting_aborts_the_producer_promptly() -> None:
    main = threading.main_thread().ident
    assert main is not None
    steps_after_interrupt = []

    def produce(emit: Emitter[int]) -> None:
        emit(0)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C while the consumer waits
        for step in range(10_000):
            steps_after_interrupt.append(step)
            emit.check()  # a checkpoint, as a training loop makes once per batch
            threading.Event().wait(0.001)
        emit(1)

    items = PushStream(produce)
    assert next(items) == 0
    with pytest.raises(KeyboardInterrupt):
        next(items)
    assert not bridge_threads()
    assert len(steps_after_interrupt) < 10_000  # stopped at a checkpoint, not at the end


def test_abort_reports_a_second_producer_failure_as_a_warning() -> None:
    def produce(emit: Emitter[int]) -> None:
        try:
            emit(1)
        finally:
            raise RuntimeError("clean-up failed")

    items = PushStream(produce)
    next(items)
    with pytest.warns(RuntimeWarning, match="clean-up failed"):
        items.abort(ValueError("consumer failed"))


def test_a_producer_raising_stream_aborted_on_its_own_is_reported() -> None:
    def produce(emit: Emitter[int]) -> None:
        raise StreamAborted("not from the bridge")

    with pytest.raises(StreamAborted, match="not from the bridge"):
        next(PushStream(produce))


def test_abandoned_stream_whose_producer_fails_warns() -> None:
    def produce(emit: Emitter[int]) -> None:
        while emit(1):
            pass
        raise OSError("failed after abandonment")

    def abandon() -> None:
        items = PushStream(produce)
        next(items)

    with pytest.warns(RuntimeWarning, match="failed after abandonment"):
        abandon()


def test_a_thread_that_cannot_start_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    producer = Producer(n=2)
    items = PushStream(producer, name="demo")
    with pytest.raises(RuntimeError, match="demo: could not start the worker thread"):
        next(items)
    assert list(items) == []
    assert producer.calls == 0


def test_run_must_be_callable() -> None:
    with pytest.raises(TypeError, match="'run' must be a callable taking an Emitter, got int: 3"):
        PushStream(3)  # type: ignore[arg-type]


def test_emit_after_the_consumer_stopped_returns_false_at_once() -> None:
    results = []

    def produce(emit: Emitter[int]) -> None:
        emit(1)
        results.extend([emit(2), emit(3), emit.stopped])

    with PushStream(produce) as items:
        next(items)
    assert results == [False, False, True]


# --- how many items the producer says are left --------------------------------------------


def test_the_length_hint_is_what_the_producer_expects_and_nothing_once_done() -> None:
    import operator

    left = [3]

    def run(emit: Emitter[int]) -> None:
        for i in range(3):
            left[0] -= 1
            emit(i)

    stream = PushStream(run, name="counted", expected=lambda: left[0])
    assert operator.length_hint(stream, -1) == 3
    assert next(stream) == 0
    assert operator.length_hint(stream, -1) == 2
    assert list(stream) == [1, 2]
    assert operator.length_hint(stream, -1) == -1  # ended: it expects nothing


def test_a_producer_that_does_not_say_gives_no_length_hint() -> None:
    import operator

    stream = PushStream(lambda emit: emit(1), name="silent", expected=lambda: None)
    assert operator.length_hint(stream, -1) == -1
    plain = PushStream(lambda emit: emit(1))
    assert operator.length_hint(plain, -1) == -1
    stream.close()
    plain.close()
