"""fit_stream: errors crossing over (issue 3, point 5) and refusals (points 6 and 8)."""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fitstream_lightning import fit_stream
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer.states import TrainerStatus

from fitstream import early_stop, pipe, tap
from fitstream.bridge import StreamAborted

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)

MakeTrainer = Callable[..., Trainer]


# -- 5. errors -----------------------------------------------------------------------------------


def _fail_in_epoch_two(module: Any, batch_idx: int) -> None:
    if module.current_epoch == 1 and batch_idx == 1:
        raise ZeroDivisionError("broken batch")


def test_training_error_is_raised_from_next_with_its_traceback(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    trainer = make_trainer(logger=recording_logger)
    events = fit_stream(trainer, small_module(on_batch=_fail_in_epoch_two))
    assert next(events)["step"] == 1
    with pytest.raises(ZeroDivisionError, match="broken batch") as info:
        next(events)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "training_step" in frames
    assert frames[-1] == "_fail_in_epoch_two"  # the traceback ends where the error was raised
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses[-1] == "failed"
    assert list(events) == []


def test_error_in_the_with_block_marks_the_run_failed_and_reaches_the_caller(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any, hook_recorder: Any
) -> None:
    module = small_module()
    trainer = make_trainer(logger=recording_logger, callbacks=[hook_recorder])
    error = ValueError("my analysis failed")

    def consume() -> None:
        with fit_stream(trainer, module) as events:
            for ev in events:
                if ev["step"] == 2:
                    raise error

    with pytest.raises(ValueError, match="my analysis failed") as info:
        consume()
    assert info.value is error
    assert module.batches == 8  # stopped at once: no batch of epoch 3
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses[-1] == "failed"
    assert hook_recorder.calls == ["on_exception"]
    (seen,) = hook_recorder.exceptions  # Lightning's hooks see why the consumer stopped
    assert isinstance(seen, StreamAborted)
    assert seen.reason is error
    assert "on_train_end" not in module.hooks


def test_keyboard_interrupt_raised_in_the_with_block_fails_the_run_and_the_process_survives(
    make_trainer: MakeTrainer,
    small_module: Any,
    recording_logger: Any,
    hook_recorder: Any,
    bridge_threads: Callable[[], list[str]],
) -> None:
    module = small_module()
    trainer = make_trainer(logger=recording_logger, callbacks=[hook_recorder])
    handler = signal.getsignal(signal.SIGINT)
    interrupt = KeyboardInterrupt()

    def consume() -> None:
        with fit_stream(trainer, module) as events:
            for ev in events:
                if ev["step"] == 2:
                    raise interrupt

    with pytest.raises(KeyboardInterrupt) as info:
        consume()
    assert info.value is interrupt
    assert module.batches == 8
    assert not bridge_threads()
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses == ["failed"]
    assert hook_recorder.calls == ["on_exception"]
    # Lightning's own Ctrl-C path (ignore SIGINT, then sys.exit) did not run
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("error", [ValueError("my analysis failed"), KeyboardInterrupt()])
def test_error_in_the_with_block_fails_the_run_when_the_loop_runs_over_a_pipeline(  # noqa: PLR0917
    make_trainer: MakeTrainer,
    small_module: Any,
    recording_logger: Any,
    hook_recorder: Any,
    bridge_threads: Callable[[], list[str]],
    error: BaseException,
) -> None:
    module = small_module()
    trainer = make_trainer(logger=recording_logger, callbacks=[hook_recorder])
    tapped: list[int] = []

    def consume() -> None:
        with fit_stream(trainer, module) as events:
            record = tap(lambda ev: tapped.append(ev["step"]))
            for ev in pipe(events, record, early_stop(key="val_loss", patience=9)):
                if ev["step"] == 2:
                    raise error

    with pytest.raises(type(error)) as info:
        consume()
    assert info.value is error
    assert tapped == [1, 2]
    assert module.batches == 8  # stopped at once: no batch of epoch 3
    assert not bridge_threads()
    # the same as a loop directly over `events`, not a normal stop by the dropped stages
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses == ["failed"]
    assert hook_recorder.calls == ["on_exception"]
    (seen,) = hook_recorder.exceptions
    assert isinstance(seen, StreamAborted)
    assert seen.reason is error
    assert "on_train_end" not in module.hooks


def test_a_pipeline_left_early_inside_the_with_block_ends_the_run_normally(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any, hook_recorder: Any
) -> None:
    module = small_module()
    trainer = make_trainer(logger=recording_logger, callbacks=[hook_recorder])
    with fit_stream(trainer, module) as events:
        for ev in pipe(events, tap(lambda ev: None)):
            if ev["step"] == 2:
                break
    assert module.batches == 8
    assert trainer.state.status == TrainerStatus.FINISHED
    assert recording_logger.statuses == ["success"]
    assert hook_recorder.calls == ["on_train_end", "on_fit_end"]


def test_a_stage_raising_inside_the_with_block_fails_the_run_with_its_error(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any, hook_recorder: Any
) -> None:
    def check(ev: dict[str, Any]) -> None:
        if ev["step"] == 2:
            raise KeyError("val_acc")

    module = small_module()
    trainer = make_trainer(logger=recording_logger, callbacks=[hook_recorder])
    with pytest.raises(KeyError, match="val_acc"), fit_stream(trainer, module) as events:
        for _ in pipe(events, tap(check)):
            pass
    assert module.batches == 8
    assert recording_logger.statuses == ["failed"]
    (seen,) = hook_recorder.exceptions
    assert isinstance(seen, StreamAborted)
    assert isinstance(seen.reason, KeyError)


def test_error_in_a_pipeline_stage_marks_the_run_failed(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    def check(ev: dict[str, Any]) -> None:
        if ev["step"] == 2:
            raise KeyError("val_acc")

    module = small_module()
    trainer = make_trainer(logger=recording_logger)
    with pytest.raises(KeyError, match="val_acc"):
        list(pipe(fit_stream(trainer, module), tap(check)))
    assert module.batches == 8
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses == ["failed"]


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_ctrl_c_while_training_stops_within_a_batch_and_the_process_survives(
    make_trainer: MakeTrainer,
    small_module: Any,
    recording_logger: Any,
    bridge_threads: Callable[[], list[str]],
) -> None:
    main = threading.main_thread().ident
    assert main is not None
    at_signal: list[int] = []
    events: Any = None

    def press_ctrl_c(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 1 and batch_idx == 1 and not at_signal:
            at_signal.append(module.batches)
            signal.pthread_kill(main, signal.SIGINT)
            # Give the consumer's thread the time it needs to see the signal (on a busy machine
            # the rest of this tiny epoch would otherwise finish first): go on only once the
            # stream is aborted, so "within a batch" below is a fact, not a race.
            for _ in range(5000):
                if events._ch.abort is not None:
                    break
                time.sleep(0.001)

    module = small_module(on_batch=press_ctrl_c)
    trainer = make_trainer(logger=recording_logger)
    handler = signal.getsignal(signal.SIGINT)
    events = fit_stream(trainer, module)
    next(events)
    with pytest.raises(KeyboardInterrupt):
        next(events)
    assert module.batches == at_signal[0]  # the batch under way finished, no other started
    assert not bridge_threads()
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses[-1] == "failed"
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's shutdown path did not run


# -- 8. refusals ---------------------------------------------------------------------------------


def test_a_thread_that_cannot_start_gives_a_clear_error(
    make_trainer: MakeTrainer, small_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    module, trainer = small_module(), make_trainer()
    events = fit_stream(trainer, module)
    with pytest.raises(
        RuntimeError, match=r"fit_stream: could not start the worker thread .*can.t start new"
    ) as info:
        next(events)
    assert isinstance(info.value.__cause__, RuntimeError)  # the original error is chained
    assert module.batches == 0
    assert list(events) == []  # the failed stream is over, it does not try again
    monkeypatch.undo()
    with fit_stream(trainer, module) as again:  # the trainer is not left marked as streaming
        assert next(again)["step"] == 1


def test_a_second_stream_on_a_streaming_trainer_is_refused(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer()
    with fit_stream(trainer, small_module()) as first:
        next(first)
        with pytest.raises(RuntimeError, match="fit_stream: this trainer is already running"):
            fit_stream(trainer, small_module())
    with fit_stream(trainer, small_module()) as again:  # free again once the first is closed
        assert next(again)["step"] == 2  # a second fit on a trainer continues its epochs


def test_fit_or_evaluation_on_a_trainer_whose_stream_is_paused_is_refused_and_it_goes_on(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    module = small_module()
    trainer = make_trainer(max_epochs=3, logger=recording_logger)
    events = fit_stream(trainer, module)  # a notebook cell: next(events) ... a later cell:
    assert next(events)["step"] == 1
    for name in ("validate", "fit", "test", "predict"):
        with pytest.raises(
            RuntimeError,
            match=rf"trainer\.{name}\(\) cannot run now: a fit_stream on this trainer is still "
            r"open .*one stream or fit per Trainer at a time",
        ):
            getattr(trainer, name)(module)
    assert trainer.state.status == TrainerStatus.RUNNING  # the refused calls changed nothing
    assert [ev["step"] for ev in events] == [2, 3]  # the paused stream goes on where it was
    assert module.batches == 12
    assert trainer.state.status == TrainerStatus.FINISHED
    assert recording_logger.statuses == ["success"]
    assert not {"fit", "validate", "test", "predict"} & set(vars(trainer))
    trainer.validate(module, verbose=False)  # the trainer is free again
    assert trainer.state.status == TrainerStatus.FINISHED


def test_two_streams_created_first_then_iterated_are_refused(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer()
    first, second = fit_stream(trainer, small_module()), fit_stream(trainer, small_module())
    with first:
        next(first)
        with pytest.raises(RuntimeError, match="started streaming in another fit_stream"):
            next(second)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook"])
def test_strategies_that_fit_in_child_processes_are_refused(
    make_trainer: MakeTrainer, small_module: Any, strategy: str
) -> None:
    trainer = make_trainer(devices=2, strategy=strategy)
    with pytest.raises(ValueError, match=r"child processes.*strategy=\"ddp\".*torchrun"):
        fit_stream(trainer, small_module())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trainer", BoringModel()), "'trainer' must be a lightning.pytorch.Trainer, got str"),
        ((None, torch.nn.Linear(1, 1)), "'model' must be a LightningModule, got Linear"),
    ],
)
def test_wrong_argument_types_are_refused(
    make_trainer: MakeTrainer, args: tuple[Any, Any], message: str
) -> None:
    trainer, model = args
    with pytest.raises(TypeError, match=message):
        fit_stream(make_trainer() if trainer is None else trainer, model)


def test_a_datamodule_of_the_wrong_type_is_refused(make_trainer: MakeTrainer) -> None:
    with pytest.raises(TypeError, match="'datamodule' must be a LightningDataModule or None"):
        fit_stream(make_trainer(), BoringModel(), datamodule=[1, 2])  # type: ignore[arg-type]
