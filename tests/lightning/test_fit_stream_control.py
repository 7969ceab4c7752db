"""Training control on fit_stream: lr in events, reduce_lr_on_plateau, stop_on_nonfinite,
best_model(restore=True) and checkpoint/resume through Lightning's ckpt_path."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fitstream_lightning import fit_stream
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from fitstream import (
    augment,
    best_model,
    checkpoint,
    early_stop,
    ema,
    pipe,
    reduce_lr_on_plateau,
    resume,
    stop_on_nonfinite,
    take,
    tap,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"
)

MakeTrainer = Callable[..., Trainer]


def _weights(module: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lr_is_in_every_event_and_a_plateau_lowers_the_next_epochs_rate(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    module = small_module()
    events = pipe(
        fit_stream(make_trainer(max_epochs=3), module),
        augment(lambda ev: {"flat": 1.0}),
        reduce_lr_on_plateau("flat", patience=0, factor=0.5, mode="min"),  # trainer.optimizers
    )
    assert [ev["lr"] for ev in events] == [0.01, 0.01, 0.005]
    assert module.lrs == [0.01] * 8 + [0.005] * 4  # epoch 3 trained with the reduced rate


def test_stop_on_nonfinite_stops_the_trainer_at_the_bad_epoch(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    def poison(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 1 and batch_idx == 0:
            with torch.no_grad():
                module.layer.weight.fill_(math.nan)

    module = small_module(on_batch=poison)
    trainer = make_trainer(max_epochs=6)
    with pytest.warns(RuntimeWarning, match=r"train_loss is nan at step 2; stopping"):
        events = list(pipe(fit_stream(trainer, module), stop_on_nonfinite()))
    assert [ev["step"] for ev in events] == [1, 2]
    assert events[-1]["stop_reason"] == "train_loss is nan at step 2"
    assert trainer.current_epoch == 2  # no third epoch was started


def _tracking(snapshots: list[dict[str, torch.Tensor]]) -> Callable[[dict[str, Any]], None]:
    return lambda ev: snapshots.append(_weights(ev["model"]))


def test_best_weights_are_restored_when_take_ends_a_lightning_stream(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    module = small_module()
    snapshots: list[dict[str, torch.Tensor]] = []
    best = best_model("val_loss", restore=True)
    scores = iter([0.5, 0.1, 0.4, 0.3])  # best at step 2
    events = pipe(
        fit_stream(make_trainer(max_epochs=6), module),
        augment(lambda ev: {"val_loss": next(scores)}),
        tap(_tracking(snapshots)),
        best,
        take(4),
    )
    assert len(list(events)) == 4
    assert best.best_step == 2
    assert _same(_weights(module), snapshots[1])
    assert not _same(snapshots[1], snapshots[3])


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_best_weights_are_restored_after_ctrl_c_during_training(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    main = threading.main_thread().ident
    assert main is not None
    stream: Any = None

    def press_ctrl_c(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 3 and batch_idx == 1:
            signal.pthread_kill(main, signal.SIGINT)
            for _ in range(
                5000
            ):  # go on only once the consumer saw it (see test_fit_stream_errors)
                if stream._ch.abort is not None:
                    break
                time.sleep(0.001)

    module = small_module(on_batch=press_ctrl_c)
    snapshots: list[dict[str, torch.Tensor]] = []
    stream = fit_stream(make_trainer(max_epochs=6), module)
    scores = iter([0.5, 0.1, 0.4, 0.3, 0.2])
    events = pipe(
        stream,
        augment(lambda ev: {"val_loss": next(scores)}),
        tap(_tracking(snapshots)),
        best_model("val_loss", restore=True),
    )
    with pytest.raises(KeyboardInterrupt):
        list(events)
    assert len(snapshots) == 3
    assert _same(_weights(module), snapshots[1])


_X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
_DATA = TensorDataset(_X, _X.sum(dim=1, keepdim=True))


def _fixed_data(module_cls: Any) -> Any:
    """The small module on data that is the same in every run (its own draws new data)."""

    class FixedData(module_cls):  # type: ignore[misc, valid-type]
        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(_DATA, batch_size=8, shuffle=True)  # shuffled by the global RNG

        def val_dataloader(self) -> DataLoader[Any]:
            return DataLoader(_DATA, batch_size=16)

    return FixedData


def _stages() -> list[Any]:
    return [
        ema("val_loss", decay=0.5),
        best_model("val_loss"),
        early_stop(key="val_loss", patience=50),
    ]


def _facts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("step", "global_step", "train_loss", "val_loss", "val_loss_ema", "lr")
    return [{k: ev[k] for k in keep} for ev in events]


def test_checkpoint_on_a_lightning_stream_resumes_with_ckpt_path(
    make_trainer: MakeTrainer, small_module: Any, tmp_path: Path
) -> None:
    small_module = _fixed_data(small_module)

    def run(
        module: Any, trainer: Trainer, stages: list[Any], path: Path, n: int, *, ckpt: Any = None
    ) -> list[dict[str, Any]]:
        smooth, best, stop = stages
        return _facts(
            list(
                pipe(
                    fit_stream(trainer, module, ckpt_path=ckpt),
                    smooth,
                    best,
                    checkpoint(path, stages=stages),
                    stop,
                    take(n),
                )
            )
        )

    torch.manual_seed(0)
    stages = _stages()
    straight = run(small_module(), make_trainer(max_epochs=6), stages, tmp_path / "a.ckpt", 6)
    best_straight = stages[1]

    path = tmp_path / "b.ckpt"
    torch.manual_seed(0)
    first = run(small_module(), make_trainer(max_epochs=6), _stages(), path, 3)

    torch.manual_seed(7)
    module, stages = small_module(), _stages()
    assert resume(path, stages=stages) == 3
    rest = run(module, make_trainer(max_epochs=6), stages, path, 6, ckpt=path)

    assert [ev["step"] for ev in first + rest] == [1, 2, 3, 4, 5, 6]
    assert first + rest == straight  # losses, ema of val_loss, lr: exactly equal
    assert (stages[1].best_step, stages[1].best_value) == (
        best_straight.best_step,
        best_straight.best_value,
    )
    with pytest.raises(ValueError, match=r"is a Lightning checkpoint; the Trainer restores"):
        resume(path, module, stages=_stages())


def test_the_stages_work_inside_an_unchanged_trainer_fit(
    make_trainer: MakeTrainer, small_module: Any, tmp_path: Path
) -> None:
    from fitstream_lightning import StreamCallback

    module = small_module()
    best = best_model("score", mode="min", restore=True)
    path = tmp_path / "callback.ckpt"
    scores = {1: 0.5, 2: 0.1, 3: 0.4}
    snapshots: list[dict[str, torch.Tensor]] = []
    callback = StreamCallback(
        augment(lambda ev: {"score": scores[ev["step"]]}),
        tap(_tracking(snapshots)),
        best,
        checkpoint(path, stages=[best]),
        take(3),
    )
    trainer = make_trainer(max_epochs=4, callbacks=[callback])
    trainer.fit(module)
    assert trainer.current_epoch == 3  # take(3) stopped the fit
    stages = [best_model("score", mode="min")]
    assert resume(path, stages=stages) == 3
    assert stages[0].best_step == best.best_step == 2
    assert _same(_weights(module), snapshots[1])  # restored when the pipeline ended
    assert not _same(snapshots[1], snapshots[2])
