"""fit_stream: the contract of issue 3, points 1-5, 7 and 8 (DDP is in test_ddp.py)."""

from __future__ import annotations

import gc
import signal
import threading
import traceback
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from fitstream_lightning import fit_stream
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks import timer as timer_module
from lightning.pytorch.demos.boring_classes import (
    BoringDataModule,
    BoringModel,
    ManualOptimBoringModel,
)
from lightning.pytorch.trainer.states import TrainerStatus

from fitstream import early_stop, pipe, take, tap

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated"),
]

MakeTrainer = Callable[..., Trainer]


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fitstream-bridge-")]


# -- the event ---------------------------------------------------------------------------------


def test_events_hold_the_epoch_facts_as_floats(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    module = small_module()
    trainer = make_trainer(max_epochs=3)
    events = list(fit_stream(trainer, module))
    assert [ev["step"] for ev in events] == [1, 2, 3]
    assert [ev["global_step"] for ev in events] == [4, 8, 12]
    first = events[0]
    assert first["model"] is module
    assert first["trainer"] is trainer
    for key in ("train_loss", "val_loss", "epoch_hook_metric", "train_time_sec"):
        assert type(first[key]) is float, key
    assert [ev["epoch_hook_metric"] for ev in events] == [0.0, 1.0, 2.0]
    # the module's logged train_loss (mean over the epoch's steps) is what the event holds
    assert first["train_loss"] == pytest.approx(sum(module.returned_losses[:4]) / 4, rel=1e-5)
    assert not any(isinstance(v, torch.Tensor) for ev in events for v in ev.values())


def test_unlogged_train_loss_is_the_mean_of_the_returned_losses(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    module = small_module(log_train_loss=False)
    events = list(fit_stream(make_trainer(max_epochs=2, accumulate_grad_batches=2), module))
    losses = module.returned_losses
    assert events[0]["train_loss"] == pytest.approx(sum(losses[:4]) / 4, rel=1e-5)
    assert events[1]["train_loss"] == pytest.approx(sum(losses[4:8]) / 4, rel=1e-5)


@pytest.mark.parametrize("model_cls", [BoringModel, ManualOptimBoringModel])
def test_lightning_demo_modules_stream_with_a_train_loss(
    make_trainer: MakeTrainer, model_cls: type[BoringModel]
) -> None:
    events = list(fit_stream(make_trainer(max_epochs=2), model_cls()))
    assert [ev["step"] for ev in events] == [1, 2]
    assert all(isinstance(ev["train_loss"], float) and ev["train_loss"] > 0 for ev in events)


def test_a_datamodule_is_passed_on(make_trainer: MakeTrainer) -> None:
    events = list(
        fit_stream(make_trainer(max_epochs=2), BoringModel(), datamodule=BoringDataModule())
    )
    assert [ev["global_step"] for ev in events] == [4, 8]


def test_validation_metrics_only_in_epochs_where_validation_ran(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer(max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=2)
    events = list(fit_stream(trainer, small_module()))
    assert [ev["step"] for ev in events] == [1, 2, 3, 4]  # no event for the sanity check
    assert ["val_loss" in ev for ev in events] == [False, True, False, True]
    assert events[1]["val_loss"] != events[3]["val_loss"]


# -- 1. lazy, and after the epoch's monitoring callbacks -----------------------------------------


def test_nothing_runs_before_the_first_next(make_trainer: MakeTrainer, small_module: Any) -> None:
    module = small_module()
    trainer = make_trainer(max_epochs=2)
    callbacks_before = list(trainer.callbacks)  # type: ignore[attr-defined]
    events = fit_stream(trainer, module)
    assert module.batches == 0
    assert not bridge_threads()
    assert trainer.callbacks == callbacks_before  # type: ignore[attr-defined]
    assert next(events)["step"] == 1
    assert module.batches == 4
    events.close()
    assert trainer.callbacks == callbacks_before  # type: ignore[attr-defined]  # ours are gone


def test_event_comes_after_early_stopping_and_checkpointing(
    make_trainer: MakeTrainer, small_module: Any, tmp_path: Path
) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    stopper = EarlyStopping(monitor="val_loss", patience=100)
    trainer = make_trainer(max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint, stopper])
    with fit_stream(trainer, small_module()) as events:
        for ev in events:
            assert stopper.best_score.item() <= ev["val_loss"]  # EarlyStopping saw this epoch
            assert torch.load(checkpoint.last_model_path, weights_only=False)["epoch"] == (
                ev["step"] - 1
            )


# -- 2. lockstep ---------------------------------------------------------------------------------


def test_training_is_paused_while_the_consumer_holds_an_event_and_sees_its_changes(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    module = small_module()
    with fit_stream(make_trainer(max_epochs=3), module) as events:
        for ev in events:
            assert module.batches == 4 * ev["step"]
            for group in ev["trainer"].optimizers[0].param_groups:
                group["lr"] = 0.001 * ev["step"]
    assert module.lrs == [0.01] * 4 + [0.001] * 4 + [0.002] * 4


# -- 3. the consumer stops -----------------------------------------------------------------------


def _break_at_two(events: Any) -> None:
    for ev in events:
        if ev["step"] == 2:
            break


def _islice_two(events: Any) -> None:
    assert len(list(islice(events, 2))) == 2


def _early_stop(events: Any) -> None:
    assert len(list(pipe(events, early_stop(key="epoch_hook_metric", patience=1)))) == 2


def _take_two(events: Any) -> None:
    assert len(list(pipe(events, take(2)))) == 2


def _close_after_two(events: Any) -> None:
    next(events)
    next(events)
    events.close()
    assert not bridge_threads()  # close() returned after the thread ended


def _drop_after_two(events: Any) -> None:
    next(events)
    next(events)


@pytest.mark.parametrize(
    "consume",
    [_break_at_two, _islice_two, _early_stop, _take_two, _close_after_two, _drop_after_two],
)
def test_consumer_stop_ends_fit_normally_at_that_epoch_even_below_min_epochs(  # noqa: PLR0917
    make_trainer: MakeTrainer,
    small_module: Any,
    recording_logger: Any,
    hook_recorder: Any,
    tmp_path: Path,
    consume: Callable[[Any], None],
) -> None:
    module = small_module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=5)
    trainer = make_trainer(
        max_epochs=10,
        min_epochs=8,
        min_steps=30,
        logger=recording_logger,
        enable_checkpointing=True,
        callbacks=[checkpoint, hook_recorder],
    )
    consume(fit_stream(trainer, module))
    gc.collect()
    assert not bridge_threads()
    assert trainer.current_epoch == 2
    assert module.batches == 8
    assert trainer.state.status == TrainerStatus.FINISHED
    assert hook_recorder.calls == ["on_train_end", "on_fit_end"]
    assert module.hooks == ["on_train_end", "on_fit_end"]
    assert recording_logger.statuses[-1] == "success"
    assert Path(checkpoint.last_model_path).name == "last.ckpt"  # saved at the end of fit
    assert (trainer.fit_loop.min_epochs, trainer.fit_loop.min_steps) == (8, 30)  # restored


# -- 4. the trainer stops by itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        ({"max_epochs": 3}, [1, 2, 3]),
        ({"max_epochs": -1, "max_steps": 6}, [1, 2]),
        ({"max_epochs": -1, "max_time": {"seconds": 0}}, []),  # stops before the first epoch
    ],
)
def test_trainer_limits_end_the_stream_after_the_last_event(
    make_trainer: MakeTrainer, small_module: Any, options: dict[str, Any], steps: list[int]
) -> None:
    trainer = make_trainer(**options)
    assert [ev["step"] for ev in fit_stream(trainer, small_module())] == steps
    assert trainer.state.status == TrainerStatus.FINISHED


def test_max_time_running_out_mid_epoch_ends_the_stream_after_that_epoch(
    make_trainer: MakeTrainer, small_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(timer_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    def time_flies(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 1 and batch_idx == 1:
            clock[0] += 3600.0

    trainer = make_trainer(max_epochs=-1, max_time={"minutes": 30})
    events = list(fit_stream(trainer, small_module(on_batch=time_flies)))
    assert [ev["step"] for ev in events] == [1, 2]
    assert events[-1]["global_step"] == 6  # epoch 2 ended after its second batch


def test_early_stopping_callback_ends_the_stream(make_trainer: MakeTrainer) -> None:
    stopper = EarlyStopping(monitor="val_loss", patience=1, stopping_threshold=1e9)
    trainer = make_trainer(max_epochs=10, callbacks=[stopper])

    class Logged(BoringModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self.step(batch))

    assert [ev["step"] for ev in fit_stream(trainer, Logged())] == [1]
    assert stopper.stopped_epoch == 0


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
    assert "_fail_in_epoch_two" in frames
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
    assert "on_train_end" not in module.hooks


def test_error_in_a_pipeline_stage_marks_the_run_failed(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    def check(ev: dict[str, Any]) -> None:
        if ev["step"] == 2:
            raise KeyError("val_acc")

    trainer = make_trainer(logger=recording_logger)
    with pytest.raises(KeyError, match="val_acc"):
        list(pipe(fit_stream(trainer, small_module()), tap(check)))
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses[-1] == "failed"


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_ctrl_c_while_training_stops_within_a_batch_and_the_process_survives(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    main = threading.main_thread().ident
    assert main is not None
    at_signal: list[int] = []

    def press_ctrl_c(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 1 and batch_idx == 1 and not at_signal:
            at_signal.append(module.batches)
            signal.pthread_kill(main, signal.SIGINT)

    module = small_module(on_batch=press_ctrl_c)
    trainer = make_trainer(logger=recording_logger)
    handler = signal.getsignal(signal.SIGINT)
    events = fit_stream(trainer, module)
    next(events)
    with pytest.raises(KeyboardInterrupt):
        next(events)
    assert module.batches <= at_signal[0] + 1
    assert not bridge_threads()
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses[-1] == "failed"
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's shutdown path did not run


# -- 7. precision and the consumer's torch state -------------------------------------------------


def test_bf16_mixed_on_cpu_gives_float_events_and_leaves_consumer_torch_state_alone(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer(max_epochs=2, precision="bf16-mixed")
    seen = []
    with torch.no_grad(), fit_stream(trainer, small_module()) as events:
        for ev in events:
            seen.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
            assert type(ev["val_loss"]) is float
            assert type(ev["train_loss"]) is float
    assert seen == [(False, False), (False, False)]
    with fit_stream(make_trainer(max_epochs=1, precision="bf16-mixed"), small_module()) as events:
        for _ in events:
            assert torch.is_grad_enabled()
            assert not torch.is_autocast_enabled("cpu")


# -- 8. refusals ---------------------------------------------------------------------------------


def test_a_thread_that_cannot_start_gives_a_clear_error(
    make_trainer: MakeTrainer, small_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    module = small_module()
    with pytest.raises(RuntimeError, match="fit_stream: could not start the worker thread"):
        next(fit_stream(make_trainer(), module))
    assert module.batches == 0


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
