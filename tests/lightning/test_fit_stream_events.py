"""fit_stream: the event (issue 3's "The event"), laziness (1), lockstep (2) and precision (7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fitstream_lightning import fit_stream
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import (
    BoringDataModule,
    BoringModel,
    ManualOptimBoringModel,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)

MakeTrainer = Callable[..., Trainer]


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
def test_lightning_demo_modules_that_log_nothing_get_their_mean_returned_loss(
    make_trainer: MakeTrainer, model_cls: type[BoringModel]
) -> None:
    # BoringModel returns {"loss": ...}, ManualOptimBoringModel the bare loss; neither logs.
    returned: list[float] = []

    class Recorded(model_cls):  # type: ignore[valid-type,misc]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            output = super().training_step(batch, batch_idx)
            loss = output["loss"] if isinstance(output, dict) else output
            returned.append(loss.item())
            return output

    trainer = make_trainer(max_epochs=2)
    events = list(fit_stream(trainer, Recorded()))
    assert not trainer.callback_metrics  # the module logged nothing
    assert [ev["step"] for ev in events] == [1, 2]
    assert [ev["train_loss"] for ev in events] == [
        pytest.approx(sum(returned[:4]) / 4, rel=1e-5),
        pytest.approx(sum(returned[4:]) / 4, rel=1e-5),
    ]


def test_a_datamodule_is_passed_on(make_trainer: MakeTrainer) -> None:
    events = list(
        fit_stream(make_trainer(max_epochs=2), BoringModel(), datamodule=BoringDataModule())
    )
    assert [ev["global_step"] for ev in events] == [4, 8]
    assert all(ev["train_loss"] > 0 for ev in events)


class _SanityKeys(Callback):
    """Remembers which metrics the sanity check had logged when it ended."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.keys = list(trainer.callback_metrics)


def test_validation_metrics_only_in_epochs_where_validation_ran(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    sanity = _SanityKeys()
    trainer = make_trainer(
        max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=2, callbacks=[sanity]
    )
    events = list(fit_stream(trainer, small_module()))
    assert sanity.keys == ["val_loss"]  # the sanity check did log a value that could go stale
    assert [ev["step"] for ev in events] == [1, 2, 3, 4]  # no event for the sanity check
    assert ["val_loss" in ev for ev in events] == [False, True, False, True]
    assert events[1]["val_loss"] != events[3]["val_loss"]
    assert all("epoch_hook_metric" in ev for ev in events)  # training metrics in every event


class _SameKeyInBoth(BoringModel):
    """Logs ``loss`` in training (per epoch) and in validation, ``val_only`` in validation."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        output = super().training_step(batch, batch_idx)
        self.log("loss", 10.0 + self.current_epoch, on_step=False, on_epoch=True)
        return output

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("loss", 100.0 + self.current_epoch)
        self.log("val_only", 200.0 + self.current_epoch)


def test_a_key_logged_in_training_and_validation_keeps_its_training_value(
    make_trainer: MakeTrainer,
) -> None:
    trainer = make_trainer(max_epochs=3, check_val_every_n_epoch=2)
    events = list(fit_stream(trainer, _SameKeyInBoth()))
    assert [ev.get("val_only") for ev in events] == [None, 201.0, None]
    # epoch 3 has no validation, yet its training value of "loss" is not dropped as stale
    assert [ev.get("loss") for ev in events] == [10.0, 11.0, 12.0]


# -- 1. lazy, and after the epoch's module hooks and monitoring callbacks ----------------------


def test_nothing_runs_before_the_first_next(
    make_trainer: MakeTrainer, small_module: Any, bridge_threads: Callable[[], list[str]]
) -> None:
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
    # Both monitor a metric the module logs in its own on_train_epoch_end, which only gets
    # worse, so they must run after that hook; both act at the end of the training epoch.
    folder = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(
        dirpath=folder, filename="{epoch}", monitor="epoch_hook_metric", mode="max", save_top_k=-1
    )
    stopper = EarlyStopping(monitor="epoch_hook_metric", mode="min", patience=100)
    trainer = make_trainer(max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint, stopper])
    seen = []
    with fit_stream(trainer, small_module()) as events:
        for ev in events:
            epoch = ev["step"] - 1
            saved = folder / f"epoch={epoch}.ckpt"
            assert saved.exists()  # ModelCheckpoint already saved this epoch
            assert torch.load(saved, weights_only=False)["epoch"] == epoch
            seen.append((ev["epoch_hook_metric"], stopper.wait_count, stopper.best_score.item()))
    # EarlyStopping already counted this epoch: best is epoch 1's 0.0, one more wait per epoch
    assert seen == [(0.0, 0, 0.0), (1.0, 1, 0.0), (2.0, 2, 0.0)]


# -- 2. lockstep -------------------------------------------------------------------------------


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


# -- 7. precision and the consumer's torch state -----------------------------------------------


def test_bf16_mixed_on_cpu_gives_float_events_and_leaves_consumer_torch_state_alone(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer(max_epochs=2, precision="bf16-mixed")
    seen = []
    in_training: list[bool] = []

    def record(module: Any, batch_idx: int) -> None:
        in_training.append(torch.is_autocast_enabled("cpu"))

    module = small_module(on_batch=record)
    with torch.no_grad(), fit_stream(trainer, module) as events:
        for ev in events:
            seen.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
            assert type(ev["val_loss"]) is float
            assert type(ev["train_loss"]) is float
    assert seen == [(False, False), (False, False)]
    assert in_training == [True] * 8  # while the worker trained under bf16 autocast
    with fit_stream(make_trainer(max_epochs=1, precision="bf16-mixed"), small_module()) as events:
        for _ in events:
            assert torch.is_grad_enabled()
            assert not torch.is_autocast_enabled("cpu")


# -- what a progress bar reads ---------------------------------------------------------------


def test_a_progress_bar_takes_its_total_from_max_epochs(
    make_trainer: MakeTrainer, small_module: Any, tmp_path: Path
) -> None:
    import io
    import operator

    from fitstream import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    trainer = make_trainer(max_epochs=3)
    stream = fit_stream(trainer, small_module())
    assert operator.length_hint(stream, -1) == 3  # before the first epoch
    out = Terminal()
    steps = [event["step"] for event in progress(stream, "val_loss", file=out)]
    assert steps == [1, 2, 3]
    final = out.getvalue().rstrip("\n").split("\r")[-1]
    assert "| 3/3 epochs [" in final  # a bar with a total, not a bare count
    assert operator.length_hint(stream, -1) == -1  # a finished stream expects nothing more

    unlimited = fit_stream(make_trainer(max_epochs=-1, max_steps=8), small_module())
    assert operator.length_hint(unlimited, -1) == -1  # no limit in epochs: no total
    unlimited.close()
