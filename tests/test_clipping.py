"""clip_grad_norm / clip_grad_value: a stream clips as the hand loop does, a member as alone."""

from __future__ import annotations

import contextlib
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import ensemble_stream, epoch_stream

torch.manual_seed(3)
X = torch.randn(48, 3)
Y = 5 * X @ torch.ones(3, 1)  # large targets: large gradients, so clipping bites


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def _hand_loop(model: nn.Module, lr: float, epochs: int, **clip: float) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(X), 16):
            xb, yb = X[start : start + 16], Y[start : start + 16]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            if "clip_grad_norm" in clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip["clip_grad_norm"])
            else:
                torch.nn.utils.clip_grad_value_(model.parameters(), clip["clip_grad_value"])
            optimizer.step()
            total += loss.item() * len(xb)
        losses.append(total / len(X))
    return losses


def _stream(model: nn.Module, lr: float, epochs: int, **clip: Any) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    events = epoch_stream(
        (X, Y), model, optimizer, nn.MSELoss(), batch_size=16, shuffle=False, **clip
    )
    return [ev["train_loss"] for ev in islice(events, epochs)]


@pytest.mark.parametrize("clip", [{"clip_grad_norm": 0.5}, {"clip_grad_value": 0.05}])
def test_epoch_stream_clips_as_the_hand_loop_does(clip: dict[str, float]) -> None:
    hand_model, stream_model = _model(0), _model(0)
    expected = _hand_loop(hand_model, 0.01, 4, **clip)
    assert _stream(stream_model, 0.01, 4, **clip) == pytest.approx(expected, rel=1e-6)
    for a, b in zip(hand_model.parameters(), stream_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert _stream(_model(0), 0.01, 4) != pytest.approx(expected, rel=1e-3)  # clipping bit


@pytest.mark.parametrize("clip", [{"clip_grad_norm": 0.5}, {"clip_grad_value": 0.05}])
@pytest.mark.parametrize("kind", [torch.optim.SGD, torch.optim.Adam, torch.optim.Rprop])
def test_each_member_is_clipped_by_its_own_norm_as_it_would_be_alone(
    clip: dict[str, float], kind: type[torch.optim.Optimizer]
) -> None:
    lrs = [0.001, 0.01, 0.03]
    alone = []
    for k, lr in enumerate(lrs):
        model = _model(k)
        opt = kind(model.parameters(), lr=lr)
        events = epoch_stream(
            (X, Y), model, opt, nn.MSELoss(), batch_size=16, shuffle=False, **clip
        )
        alone.append([ev["train_loss"] for ev in islice(events, 3)])
    models = [_model(k) for k in range(len(lrs))]
    optimizers = [kind(m.parameters(), lr=lr) for m, lr in zip(models, lrs, strict=True)]
    stepped_alone = pytest.warns(UserWarning, match="each member's optimizer steps on its own")
    with stepped_alone if kind is torch.optim.Rprop else contextlib.nullcontext():
        events = ensemble_stream(
            (X, Y), models, optimizers, nn.MSELoss(), batch_size=16, shuffle=False, **clip
        )
    together = [ev["train_loss"] for ev in islice(events, 3)]
    for k in range(len(lrs)):
        assert [epoch[k] for epoch in together] == pytest.approx(alone[k], rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"clip_grad_norm": 0}, ValueError, r"'clip_grad_norm' must be a positive, finite number"),
        ({"clip_grad_norm": -1.0}, ValueError, r"'clip_grad_norm' must be a positive, finite"),
        ({"clip_grad_norm": float("nan")}, ValueError, r"'clip_grad_norm' must be a positive"),
        ({"clip_grad_value": "1"}, TypeError, r"'clip_grad_value' must be a positive number or"),
        ({"clip_grad_value": True}, TypeError, r"'clip_grad_value' must be a positive number or"),
        (
            {"clip_grad_norm": 1.0, "clip_grad_value": 1.0},
            ValueError,
            r"give clip_grad_norm or clip_grad_value, not both",
        ),
    ],
)
def test_bad_clipping_is_refused_at_the_call_naming_the_keyword(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    model = _model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=f"^epoch_stream: {match}"):
        epoch_stream((X, Y), model, opt, nn.MSELoss(), **kwargs)
    models = [_model(0), _model(1)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(error, match=f"^ensemble_stream: {match}"):
        ensemble_stream((X, Y), models, opts, nn.MSELoss(), **kwargs)
