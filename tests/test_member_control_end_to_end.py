"""Training control on a real ``ensemble_stream``: per-member rates, NaN, best weights, resume.

The stand-in ensemble of tests/test_control.py covers the stages' own behaviour; these tests
run them on the real source.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    best_model,
    checkpoint,
    ensemble_stream,
    pipe,
    reduce_lr_on_plateau,
    resume,
    stop_on_nonfinite,
    take,
    tap,
    validation_loss,
)

X, Y = torch.randn(64, 3), torch.randn(64, 1)
X_VAL, Y_VAL = torch.randn(40, 3), torch.randn(40, 1)


def _sweep(lrs: list[float], seed: int = 0) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    torch.manual_seed(seed)
    models = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)) for _ in lrs]
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, lrs, strict=True)]
    return models, optimizers


def _stream(
    models: list[nn.Module], optimizers: list[torch.optim.Optimizer], **kwargs: Any
) -> Iterator[dict[str, Any]]:
    result: Iterator[dict[str, Any]] = ensemble_stream(
        (X, Y), models, optimizers, nn.MSELoss(), batch_size=16, **kwargs
    )
    return result


def test_a_members_reduced_rate_is_its_next_epochs_rate_and_only_its_own() -> None:
    plain = [ev["train_loss"] for ev in take(_stream(*_sweep([0.1, 0.1])), 3)]
    models, optimizers = _sweep([0.1, 0.1])
    flat = {1: [1.0, 1.0], 2: [0.5, 1.0], 3: [0.4, 1.0]}  # member 1 never improves
    events = pipe(
        _stream(models, optimizers),
        augment(lambda ev: {"score": flat[ev["step"]]}),
        reduce_lr_on_plateau("score", patience=0, factor=0.5, mode="min"),  # event["optimizer"]
        take(3),
    )
    seen = [(ev["train_loss"], ev["lr"]) for ev in events]
    reduced = [losses for losses, _ in seen]
    assert [lr for _, lr in seen] == [[0.1, 0.1], [0.1, 0.1], [0.1, 0.05]]  # per member
    assert [o.param_groups[0]["lr"] for o in optimizers] == [0.1, 0.025]
    assert [losses[0] for losses in reduced] == [losses[0] for losses in plain]  # member 0 as is
    assert reduced[1][1] == plain[1][1]  # epoch 2 still trained at the old rate
    assert reduced[2][1] != plain[2][1]  # epoch 3 trained at the reduced one


def test_a_diverging_member_is_frozen_and_the_others_train_on() -> None:
    models, optimizers = _sweep([100.0, 0.01])
    frozen_at: dict[int, int] = {}

    def note(event: dict[str, Any]) -> None:
        for k, active in enumerate(event["model"].active):
            if not active:
                frozen_at.setdefault(k, event["step"])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = list(pipe(_stream(models, optimizers), stop_on_nonfinite(), tap(note), take(8)))
    assert len(events) == 8  # member 1 stays finite: the stream goes on
    assert 0 in frozen_at
    assert 1 not in frozen_at
    assert any("member 0 frozen" in str(w.message) for w in caught)
    assert all(math.isfinite(ev["train_loss"][1]) for ev in events)


def test_each_member_holds_its_best_weights_when_the_stream_ends() -> None:
    models, optimizers = _sweep([0.5, 0.05, 0.005])
    snapshots: list[list[dict[str, torch.Tensor]]] = []
    best = best_model("val_loss", restore=True)
    events = pipe(
        _stream(models, optimizers),
        augment(validation_loss((X_VAL, Y_VAL), nn.MSELoss())),
        tap(lambda ev: snapshots.append([_copy(m) for m in ev["model"].members])),
        best,
        take(6),
    )
    list(events)
    for k, model in enumerate(models):
        at = best.best_step[k] - 1
        assert all(torch.equal(v, snapshots[at][k][name]) for name, v in _copy(model).items())


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "make",
    [
        lambda p, lr: torch.optim.SGD(p, lr=lr),
        lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
        lambda p, lr: torch.optim.Adam(p, lr=lr / 10, amsgrad=lr < 0.05),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_members_resume_exactly(tmp_path: Path, make: Any) -> None:
    # Each member's optimizer state (momentum buffers, Adam's moments and step counts) is in
    # optimizers[k].state while an event is held, so the checkpoint saves it and the resumed
    # stream takes it in: 10 epochs straight == 4 + resume + 6.
    def sweep(seed: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        models, _ = _sweep([0.1, 0.01], seed)
        return models, [make(m.parameters(), lr) for m, lr in zip(models, [0.1, 0.01], strict=True)]

    straight = [ev["train_loss"] for ev in take(_stream(*sweep(0)), 10)]
    models, optimizers = sweep(0)
    path = tmp_path / "ensemble.ckpt"
    first = [
        ev["train_loss"] for ev in pipe(_stream(models, optimizers), checkpoint(path), take(4))
    ]
    models, optimizers = sweep(9)
    start = resume(path, models, optimizers)
    assert start == 4
    rest = [ev["train_loss"] for ev in take(_stream(models, optimizers, step_offset=start), 6)]
    assert first + rest == straight


def test_sinks_keep_the_rates_and_the_optimizers_name_not_the_optimizers(tmp_path: Path) -> None:
    from fitstream import collect, collect_jsonl, collect_pd

    models, optimizers = _sweep([0.1, 0.01])
    assert collect(take(_stream(models, optimizers), 1))[0]["lr"] == [0.1, 0.01]
    collect_jsonl(take(_stream(models, optimizers), 1), tmp_path / "run.jsonl")
    assert '"lr": [0.1, 0.01]' in (tmp_path / "run.jsonl").read_text()
    table = collect_pd(take(_stream(models, optimizers), 1))
    assert table["optimizer"].tolist() == ["SGD", "SGD"]  # the hyperparameter, by member
    assert table["lr"].tolist() == [0.1, 0.01]
