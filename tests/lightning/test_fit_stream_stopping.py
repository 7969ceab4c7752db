"""fit_stream: the consumer stopping (issue 3, point 3), the Trainer stopping itself (4), and
the cross-rank agreement behind point 6 (the DDP run itself is in test_lightning_examples.py).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from fitstream_lightning import fit_stream
from fitstream_lightning._distributed import OtherRankFailed, agree_to_stop
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks import timer as timer_module
from lightning.pytorch.demos.boring_classes import (
    BoringDataModule,
    BoringModel,
    ManualOptimBoringModel,
)
from lightning.pytorch.trainer.states import TrainerStatus

from fitstream import early_stop, pipe, take

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)

MakeTrainer = Callable[..., Trainer]


# -- 3. the consumer stops ---------------------------------------------------------------------


def _break_at_two(events: Any) -> None:
    for ev in events:
        if ev["step"] == 2:
            break


def _islice_two(events: Any) -> None:
    assert len(list(islice(events, 2))) == 2


def _early_stop(events: Any) -> None:
    assert len(list(pipe(events, early_stop(key="epoch_hook_metric", patience=1, mode="min")))) == 2


def _take_two(events: Any) -> None:
    assert len(list(pipe(events, take(2)))) == 2


def _close_after_two(events: Any) -> None:
    next(events)
    next(events)
    events.close()
    # close() returned only after the worker thread ended
    assert not [t for t in threading.enumerate() if t.name.startswith("fitstream-bridge-")]


def _drop_after_two(events: Any) -> None:
    next(events)
    next(events)
    del events  # the caller holds no reference either: the stream is garbage now


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
    bridge_threads: Callable[[], list[str]],
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
    assert recording_logger.statuses == ["success"]
    # every_n_epochs=5 saved nothing during the two epochs: last.ckpt is the end-of-fit save
    last = Path(checkpoint.last_model_path)
    assert last.name == "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8
    assert (trainer.fit_loop.min_epochs, trainer.fit_loop.min_steps) == (8, 30)  # restored


@pytest.mark.parametrize(
    ("model_cls", "datamodule"),
    [(BoringModel, None), (BoringModel, BoringDataModule), (ManualOptimBoringModel, None)],
)
def test_lightning_demo_modules_stop_at_the_consumers_epoch(
    make_trainer: MakeTrainer,
    hook_recorder: Any,
    model_cls: type[BoringModel],
    datamodule: type[BoringDataModule] | None,
) -> None:
    trainer = make_trainer(max_epochs=10, min_epochs=5, callbacks=[hook_recorder])
    data = None if datamodule is None else datamodule()
    events = fit_stream(trainer, model_cls(), datamodule=data)
    assert trainer.current_epoch == 0  # lazy
    assert [ev["step"] for ev in islice(events, 2)] == [1, 2]
    events.close()
    assert trainer.current_epoch == 2
    assert trainer.state.status == TrainerStatus.FINISHED
    assert hook_recorder.calls == ["on_train_end", "on_fit_end"]


# -- 4. the trainer stops by itself ------------------------------------------------------------


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


# -- 6. any rank's stop stops every rank -------------------------------------------------------


class _TwoRanks:
    """Stands in for a 2-process DDP strategy: the other rank's code (0 go on, 1 stop, 2 failed)."""

    root_device = torch.device("cpu")

    def __init__(self, other: int) -> None:
        self.other = other

    def reduce(self, value: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "max"
        return torch.maximum(value, torch.tensor(self.other))


@pytest.mark.parametrize(
    ("here", "other", "stop"),
    [(False, 0, False), (True, 0, True), (False, 1, True), (True, 1, True)],
)
def test_a_stop_decided_on_any_rank_stops_this_one(here: bool, other: int, stop: bool) -> None:
    trainer = SimpleNamespace(world_size=2, strategy=_TwoRanks(other))
    assert agree_to_stop(trainer, here) is stop  # type: ignore[arg-type]


@pytest.mark.parametrize("here", [False, True])
def test_another_ranks_failure_ends_this_one_with_a_clear_error(here: bool) -> None:
    trainer = SimpleNamespace(world_size=2, strategy=_TwoRanks(2), current_epoch=3, global_rank=1)
    with pytest.raises(OtherRankFailed, match=r"^fit_stream: another rank's consumer or stages"):
        agree_to_stop(trainer, here)  # type: ignore[arg-type]
