"""The toolbox on a real ``ensemble_stream``: validation, early stopping, best weights, a table.

The other member tests use the suite's stand-in ensemble; these run the real source.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    best_model,
    collect_pd,
    early_stop,
    ensemble_stream,
    pipe,
    take,
    tap,
    validation_loss,
)

LRS = [0.5, 0.05, 0.005]


@pytest.fixture
def sweep() -> dict[str, Any]:
    X, y = torch.randn(64, 3), torch.randn(64, 1)
    X_val, y_val = torch.randn(40, 3), torch.randn(40, 1)
    models = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)) for _ in LRS]
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, LRS, strict=True)]
    return {"data": (X, y), "val": (X_val, y_val), "models": models, "optimizers": optimizers}


def source(sweep: dict[str, Any], counter: list[int]) -> Iterator[dict[str, Any]]:
    stream = ensemble_stream(
        sweep["data"], sweep["models"], sweep["optimizers"], nn.MSELoss(), batch_size=16
    )
    try:
        for event in stream:
            counter.append(event["step"])
            yield event
    finally:
        stream.close()


def test_validation_per_member_equals_each_model_alone(sweep: dict[str, Any]) -> None:
    add = validation_loss(sweep["val"], nn.MSELoss(), batch_size=16)
    for event in pipe(source(sweep, []), augment(add), take(3)):
        alone = [add({"model": m})["val_loss"] for m in sweep["models"]]
        assert event["val_loss"] == pytest.approx(alone, rel=1e-5)


def test_early_stop_freezes_members_and_ends_without_another_epoch(sweep: dict[str, Any]) -> None:
    pulled: list[int] = []
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def remember_frozen(event: dict[str, Any]) -> None:
        for k, active in enumerate(event["model"].active):
            if not active and k not in kept:
                kept[k] = {n: t.clone() for n, t in sweep["models"][k].state_dict().items()}

    events = list(
        pipe(
            source(sweep, pulled),
            augment(validation_loss(sweep["val"], nn.MSELoss())),
            early_stop(key="val_loss", patience=2, min_delta=0.05),
            tap(remember_frozen),
            take(40),
        )
    )
    steps = [ev["step"] for ev in events]
    assert pulled == steps  # not one epoch more than the consumer saw
    if len(steps) < 40:  # the stream ended because every member stopped
        assert not any(events[-1]["model"].active)
    for k, state in kept.items():  # frozen weights are those of the freeze event
        for name, tensor in sweep["models"][k].state_dict().items():
            assert torch.equal(tensor, state[name]), (k, name)
    assert kept  # min_delta=0.05 on a noise target: some member stops


def test_best_model_and_collect_pd_on_a_sweep(sweep: dict[str, Any]) -> None:
    best = best_model("val_loss")
    add = validation_loss(sweep["val"], nn.MSELoss())
    frame = collect_pd(pipe(source(sweep, []), augment(add), tap(best), take(6)))
    assert len(frame) == 6 * len(LRS)
    assert frame["member"].tolist() == list(range(len(LRS))) * 6
    assert frame["lr"].tolist() == pytest.approx(LRS * 6)
    assert "model" not in frame.columns
    by_member = frame.groupby("member")["val_loss"].min().tolist()
    assert best.best_value == pytest.approx(by_member)
    best.load_into(sweep["models"])
    reloaded = [add({"model": m})["val_loss"] for m in sweep["models"]]
    assert reloaded == pytest.approx(best.best_value, rel=1e-5)
