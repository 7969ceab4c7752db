"""Tests for composing stages: pipe, stage_factory, upstream and is_stream.

The ``assert_type`` lines are checked by a type checker (``uv run mypy tests/test_pipe.py``)
and are no-ops at run time: they pin the two call forms' types that ``stage_factory`` gives.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import pytest
import torch
from typing_extensions import assert_type

from fitstream import Event, early_stop, pipe, take
from fitstream.events import Stage
from fitstream.pipeline import is_stream, stage_factory, upstream


def tag(label: str) -> Stage:
    """A stage that appends ``label`` to each event's ``trail``, pulling one event per event."""

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for ev in it:
                yield {**ev, "trail": [*ev.get("trail", []), label]}

    return stage


@stage_factory
def scale(key: str, factor: float = 2.0) -> Stage:
    """A tiny stage factory with an argument check, to exercise stage_factory."""
    if factor == 0:
        raise ValueError("scale: 'factor' must not be 0")

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for ev in it:
                yield {**ev, key: ev[key] * factor}

    return stage


# --- pipe ----------------------------------------------------------------------------------


def test_pipe_applies_stages_left_to_right() -> None:
    out = list(pipe([{"step": 1}], tag("a"), tag("b"), tag("c")))
    assert out == [{"step": 1, "trail": ["a", "b", "c"]}]


def test_pipe_equals_nested_calls(counting_source: Any) -> None:
    nested = list(tag("b")(tag("a")(counting_source(3))))
    piped = list(pipe(counting_source(3), tag("a"), tag("b")))
    assert piped == nested


def test_pipe_without_stages_iterates_the_stream() -> None:
    events = [{"step": 1}, {"step": 2}]
    result = pipe(events)
    assert next(result) is events[0]
    assert list(result) == [events[1]]


def test_pipe_is_lazy(counting_source: Any) -> None:
    source = counting_source()
    stream = pipe(source, tag("a"), take(5), tag("b"))
    assert source.pulled == 0
    assert [ev["step"] for ev in islice(stream, 2)] == [1, 2]
    assert source.pulled == 2


def test_pipe_result_works_with_itertools(counting_source: Any) -> None:
    source = counting_source()
    assert len(list(islice(pipe(source, tag("a")), 4))) == 4
    assert source.pulled == 4


def test_closing_the_pipeline_closes_the_source(counting_source: Any) -> None:
    source = counting_source()
    stream = pipe(source, tag("a"), tag("b"))
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert source.closed
    assert source.pulled == 1


def test_ending_stage_closes_source_through_the_chain(counting_source: Any) -> None:
    source = counting_source()
    assert len(list(pipe(source, tag("a"), take(2), tag("b")))) == 2
    assert source.closed
    assert source.pulled == 2


def test_pipe_source_error_reaches_consumer_unchanged(counting_source: Any) -> None:
    source = counting_source(fail_at=2)
    stream = pipe(source, tag("a"), tag("b"))
    next(stream)
    with pytest.raises(RuntimeError, match="source failed at event 2"):
        next(stream)
    assert source.closed
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (3, r"pipe: stage 2 must be callable \(a stage such as take\(3\)\), got int: 3"),
        (None, r"pipe: stage 2 must be callable .*got NoneType: None"),
        ("take", r"pipe: stage 2 must be callable .*got str: 'take'"),
    ],
)
def test_pipe_rejects_non_callable_stage_before_pulling(
    bad: Any, message: str, counting_source: Any
) -> None:
    source = counting_source()
    with pytest.raises(TypeError, match=message):
        pipe(source, tag("a"), bad)
    assert source.pulled == 0


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (5, r"pipe: 'stream' must be an iterable of event dicts, got int: 5"),
        ({"step": 1}, r"pipe: 'stream' must be an iterable of event dicts, got dict"),
        ("events", r"pipe: 'stream' must be an iterable of event dicts, got str: 'events'"),
    ],
)
def test_pipe_rejects_what_is_not_a_stream(stream: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        pipe(stream, tag("a"))


def test_pipe_forgotten_call_of_a_factory_is_caught_late_but_clearly() -> None:
    # take without arguments is a factory, not a stage: calling it with the stream gives
    # Python's own "missing argument" error naming take, not silent misbehaviour.
    with pytest.raises(TypeError, match=r"take\(\) missing 1 required positional argument: 'n'"):
        list(pipe([{"step": 1}], take))  # type: ignore[arg-type]


# --- stage_factory -------------------------------------------------------------------------


def test_stage_factory_both_call_forms_agree(counting_source: Any) -> None:
    stream_first = list(scale(counting_source(3), "val_loss", factor=3.0))
    as_stage = list(pipe(counting_source(3), scale("val_loss", factor=3.0)))
    assert stream_first == as_stage
    assert [ev["val_loss"] for ev in as_stage] == pytest.approx([3.0, 1.5, 1.0])


def test_stage_factory_stream_first_is_lazy(counting_source: Any) -> None:
    source = counting_source()
    stream = scale(source, "val_loss")
    assert source.pulled == 0
    next(stream)
    assert source.pulled == 1


def test_stage_factory_checks_arguments_before_pulling(counting_source: Any) -> None:
    source = counting_source()
    with pytest.raises(ValueError, match="scale: 'factor' must not be 0"):
        scale(source, "val_loss", factor=0)
    with pytest.raises(ValueError, match="scale: 'factor' must not be 0"):
        scale("val_loss", 0)
    assert source.pulled == 0


@pytest.mark.parametrize("first", ["val_loss", b"val_loss", {"step": 1}])
def test_stage_factory_strings_and_mappings_are_arguments(first: Any) -> None:
    seen: list[Any] = []

    @stage_factory
    def record(arg: Any) -> Stage:
        seen.append(arg)
        return tag("x")

    stage = record(first)
    assert callable(stage)
    assert seen == [first]


@pytest.mark.parametrize(
    "stream",
    [
        [{"step": 1, "val_loss": 1.0}],
        ({"step": 1, "val_loss": 1.0},),
        iter([{"step": 1, "val_loss": 1.0}]),
        (ev for ev in [{"step": 1, "val_loss": 1.0}]),
        [Event(step=1, val_loss=1.0)],
    ],
    ids=["list", "tuple", "iterator", "generator", "events"],
)
def test_stage_factory_recognises_streams(stream: Any) -> None:
    assert [ev["val_loss"] for ev in scale(stream, "val_loss")] == [2.0]


def test_stage_factory_keeps_name_and_docstring() -> None:
    assert scale.__name__ == "scale"  # type: ignore[attr-defined]
    assert "tiny stage factory" in (scale.__doc__ or "")
    assert take.__name__ == "take"  # type: ignore[attr-defined]
    assert early_stop.__doc__ is not None
    assert "patience" in early_stop.__doc__


def test_stage_factory_call_forms_have_distinct_types() -> None:
    events: list[dict[str, Any]] = [{"step": 1, "val_loss": 1.0}]
    stream = assert_type(take(events, 1), Iterator[dict[str, Any]])
    stage = assert_type(take(1), Stage)
    stopped = assert_type(early_stop(events, key="val_loss", patience=2), Iterator[dict[str, Any]])
    assert_type(early_stop(key="val_loss", patience=2), Stage)
    assert list(stream) == events
    assert list(stage(events)) == events
    assert list(stopped) == events


# --- upstream ------------------------------------------------------------------------------


class Closable:
    """An iterator that records ``close()`` calls."""

    def __init__(self, n: int) -> None:
        self.items = iter(range(n))
        self.closes = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return next(self.items)

    def close(self) -> None:
        self.closes += 1


def test_upstream_closes_after_normal_exit() -> None:
    source = Closable(3)
    with upstream(source) as it:
        assert list(it) == [0, 1, 2]
    assert source.closes == 1


def test_upstream_closes_when_block_raises_and_lets_error_through() -> None:
    source = Closable(3)
    error = ValueError("consumer failed")

    def consume() -> None:
        with upstream(source) as it:
            next(it)
            raise error

    with pytest.raises(ValueError, match="consumer failed") as info:
        consume()
    assert info.value is error
    assert source.closes == 1


def test_upstream_closes_when_generator_is_closed(counting_source: Any) -> None:
    source = counting_source()

    def stage() -> Generator[dict[str, Any], None, None]:
        with upstream(source) as it:
            yield from it

    gen = stage()
    next(gen)
    gen.close()
    assert source.closed


def test_upstream_closes_when_generator_is_garbage_collected(counting_source: Any) -> None:
    import gc

    source = counting_source()

    def stage() -> Iterator[dict[str, Any]]:
        with upstream(source) as it:
            yield from it

    gen = stage()
    next(gen)
    del gen
    gc.collect()
    assert source.closed


def test_upstream_accepts_iterables_without_close() -> None:
    with upstream([1, 2]) as it:
        assert next(it) == 1
        assert list(it) == [2]


def test_upstream_pulls_nothing_by_itself(counting_source: Any) -> None:
    source = counting_source()
    with upstream(source):
        pass
    assert source.pulled == 0
    assert source.closed


# --- is_stream -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj", [[], [{"step": 1}], (), iter([]), (x for x in range(0)), iter(range(3)), {"a", "b"}]
)
def test_is_stream_true_for_iterables(obj: object) -> None:
    assert is_stream(obj)


@pytest.mark.parametrize(
    "obj",
    [
        "val_loss",
        b"x",
        bytearray(b"x"),
        {"step": 1},
        Event(step=1),
        3,
        None,
        1.5,
        print,
        ["train_loss", "val_loss"],
        ("val_loss",),
        range(3),
        torch.tensor([1.0, 2.0]),
        np.arange(3),
    ],
)
def test_is_stream_false_for_arguments(obj: object) -> None:
    assert not is_stream(obj)


def test_a_list_of_keys_first_reaches_the_factory_argument_check() -> None:
    # Taken for a stream, ["val_loss"] would give "missing argument 'patience'" or, for a
    # factory whose arguments all have defaults, a stream of strings failing much later.
    with pytest.raises(
        TypeError, match=r"early_stop: 'key' must be a non-empty string .* got list"
    ):
        early_stop(["val_loss"], 3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"take: 'n' must be a non-negative int, got Tensor"):
        take(torch.tensor(3))  # type: ignore[call-overload]
