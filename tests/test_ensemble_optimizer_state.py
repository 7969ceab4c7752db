"""ensemble_stream keeps each member's optimizer state in ``optimizers[k].state``, torch's way.

While an event is held, ``optimizers[k].state_dict()`` is what training member ``k`` alone
would give; state an optimizer already holds is taken in at the start of a stream, so a second
stream (or a resumed one) continues exactly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import checkpoint, ensemble_stream, epoch_stream, pipe, take

OptFactory = Callable[[Any], torch.optim.Optimizer]
SGD, Adam, AdamW = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW
SWEEPS: dict[str, list[OptFactory]] = {
    "sgd": [
        lambda p: SGD(p, lr=0.05),
        lambda p: SGD(p, lr=0.02, momentum=0.9),
        lambda p: SGD(p, lr=0.03, momentum=0.8, dampening=0.3, weight_decay=0.01),
        lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    ],
    "adam": [
        lambda p: Adam(p, lr=1e-2),
        lambda p: Adam(p, lr=5e-3, eps=1e-6, amsgrad=True),
    ],
    "param-groups": [
        lambda p: _two_groups(Adam, p, lr=1e-2),
        lambda p: _two_groups(Adam, p, lr=3e-3, amsgrad=True),
    ],
    "adamw": [
        lambda p: AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: AdamW(p, lr=4e-3, amsgrad=True),
    ],
}


def _two_groups(cls: Any, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    first, *rest = list(params)
    optimizer: torch.optim.Optimizer = cls(
        [{"params": [first]}, {"params": rest, "lr": 1e-3}], **kwargs
    )
    return optimizer


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    X = torch.randn(37, 4, generator=g)
    return X, torch.stack([X[:, 0] - 2 * X[:, 1], X[:, 2] * X[:, 3]], dim=1)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _ensemble(models: list[nn.Module], opts: list[torch.optim.Optimizer], seed: int = 7) -> Any:
    gen = torch.Generator().manual_seed(seed)
    return ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8, generator=gen)


def _held(state: dict[Any, Any]) -> dict[Any, Any]:
    """The entries that hold something: older torch's SGD (2.1) keeps {'momentum_buffer': None}."""
    return {i: e for i, e in state.items() if any(v is not None for v in e.values())}


def _assert_same_state(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["param_groups"] == want["param_groups"]
    got = {**got, "state": _held(got["state"])}
    want = {**want, "state": _held(want["state"])}
    assert sorted(got["state"]) == sorted(want["state"])
    for index, entry in want["state"].items():
        assert list(got["state"][index]) == list(entry), index
        for key, value in entry.items():
            mine = got["state"][index][key]
            if key == "step":
                assert mine.dtype == value.dtype
                assert mine.device == value.device
                assert mine.item() == value.item()
            else:
                torch.testing.assert_close(mine, value, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_each_members_optimizer_state_is_what_training_it_alone_gives(sweep: str) -> None:
    factories = SWEEPS[sweep]
    models = [_mlp(seed) for seed in range(len(factories))]
    alone = [copy.deepcopy(m) for m in models]
    opts = [make(m.parameters()) for make, m in zip(factories, models, strict=True)]
    assert all(not opt.state for opt in opts)
    event = list(islice(_ensemble(models, opts), 3))[-1]
    assert event["optimizer"] == opts
    for k, make in enumerate(factories):
        opt = make(alone[k].parameters())
        gen = torch.Generator().manual_seed(7)
        solo = epoch_stream(_data(), alone[k], opt, nn.MSELoss(), batch_size=8, generator=gen)
        list(islice(solo, 3))
        _assert_same_state(opts[k].state_dict(), opt.state_dict())


def test_the_state_is_a_view_into_the_stacked_state_and_follows_each_epoch() -> None:
    models = [_mlp(seed) for seed in range(3)]
    opts = [Adam(m.parameters(), lr=1e-2) for m in models]
    stream = _ensemble(models, opts)
    next(stream)
    first = opts[1].state[models[1][0].weight]
    assert first["exp_avg"]._base is not None  # a view, not a copy
    before = first["exp_avg"].clone()
    next(stream)
    second = opts[1].state[models[1][0].weight]
    assert second is first  # the same entry, updated in place
    assert first["step"].item() == 10.0  # 5 batches per epoch
    assert not torch.equal(first["exp_avg"], before)


@pytest.mark.parametrize(
    "make",
    [lambda p: SGD(p, lr=0.02, momentum=0.9), lambda p: Adam(p, lr=1e-2, amsgrad=True)],
    ids=["sgd-momentum", "adam"],
)
def test_a_second_stream_continues_where_the_first_left_off(make: OptFactory) -> None:
    models = [_mlp(seed) for seed in range(3)]
    twin = [copy.deepcopy(m) for m in models]
    opts = [make(m.parameters()) for m in models]
    straight = [ev["train_loss"] for ev in islice(_ensemble(models, opts), 6)]
    opts = [make(m.parameters()) for m in twin]
    first = [ev["train_loss"] for ev in islice(_ensemble(twin, opts, seed=7), 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # optimizers with state take the vectorised path
        stream = ensemble_stream(
            _data(), twin, opts, nn.MSELoss(), batch_size=8, generator=_advanced(3)
        )
    rest = [ev["train_loss"] for ev in islice(stream, 3)]
    assert first + rest == straight
    for a, b in zip(models, twin, strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)


def _advanced(epochs: int) -> torch.Generator:
    """The shuffle generator of a run after ``epochs`` epochs."""
    gen = torch.Generator().manual_seed(7)
    for _ in range(epochs):
        torch.randperm(37, generator=gen)
    return gen


def test_a_frozen_members_state_does_not_advance() -> None:
    models = [_mlp(seed) for seed in range(3)]
    opts = [Adam(m.parameters(), lr=1e-2) for m in models]
    stream = _ensemble(models, opts)
    event = next(stream)
    event["model"].freeze(1)
    held = copy.deepcopy(opts[1].state_dict())
    moving = copy.deepcopy(opts[0].state_dict())
    next(stream)
    next(stream)
    _assert_same_state(opts[1].state_dict(), held)
    assert opts[0].state_dict()["state"][0]["step"].item() == 15.0
    assert not torch.equal(
        opts[0].state_dict()["state"][0]["exp_avg"], moving["state"][0]["exp_avg"]
    )


def test_state_loaded_while_an_event_is_held_is_taken_in() -> None:
    models = [_mlp(seed) for seed in range(2)]
    opts = [SGD(m.parameters(), lr=0.02, momentum=0.9) for m in models]
    stream = _ensemble(models, opts)
    next(stream)
    saved = copy.deepcopy(opts[0].state_dict())
    weights = copy.deepcopy(models[0].state_dict())
    next(stream)
    opts[0].load_state_dict(saved)  # back to the end of epoch 1 ...
    models[0].load_state_dict(weights)
    loss = next(stream)["train_loss"][0]
    twin_models = [_mlp(seed) for seed in range(2)]
    twin_opts = [SGD(m.parameters(), lr=0.02, momentum=0.9) for m in twin_models]
    twin = _ensemble(twin_models, twin_opts)
    next(twin)
    # ... so epoch 3 trains as epoch 2 would from there, on epoch 3's data order
    twin_stream = ensemble_stream(
        _data(), twin_models, twin_opts, nn.MSELoss(), batch_size=8, generator=_advanced(2)
    )
    assert next(twin_stream)["train_loss"][0] == pytest.approx(loss, rel=1e-6)


def test_a_checkpoint_holds_each_members_state_compactly(tmp_path: Path) -> None:
    models = [nn.Linear(200, 50) for _ in range(4)]
    opts = [Adam(m.parameters(), lr=1e-3) for m in models]
    X, y = torch.randn(16, 200), torch.randn(16, 50)
    path = tmp_path / "run.ckpt"
    stream = ensemble_stream((X, y), models, opts, nn.MSELoss(), batch_size=8)
    list(pipe(stream, checkpoint(path), take(2)))
    saved = torch.load(path, weights_only=True)
    for state in saved["optimizers"]:
        for entry in state["state"].values():
            for value in entry.values():
                assert value.untyped_storage().nbytes() == value.numel() * value.element_size()
    alone = tmp_path / "alone.ckpt"
    torch.save([copy.deepcopy(opt.state_dict()) for opt in opts], alone)
    weights = 4 * 50 * 201 * 4
    assert path.stat().st_size < alone.stat().st_size + weights * 1.2


@pytest.mark.parametrize(
    "make",
    [lambda p: SGD(p, lr=0.02, momentum=0.9, dampening=0.2), lambda p: Adam(p, lr=1e-2)],
    ids=["sgd-momentum", "adam"],
)
def test_members_with_and_without_state_each_continue_as_alone(make: OptFactory) -> None:
    models = [_mlp(seed) for seed in range(2)]
    opts = [make(m.parameters()) for m in models]
    models[0](torch.ones(3, 4)).sum().backward()
    opts[0].step()  # member 0 holds state, member 1 none
    opts[0].zero_grad()
    alone = [copy.deepcopy(m) for m in models]
    alone_opts = [make(m.parameters()) for m in alone]
    alone_opts[0].load_state_dict(opts[0].state_dict())
    together = [ev["train_loss"] for ev in islice(_ensemble(models, opts), 3)]
    for k in range(2):
        gen = torch.Generator().manual_seed(7)
        solo = epoch_stream(
            _data(), alone[k], alone_opts[k], nn.MSELoss(), batch_size=8, generator=gen
        )
        losses = [ev["train_loss"] for ev in islice(solo, 3)]
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        _assert_same_state(opts[k].state_dict(), alone_opts[k].state_dict())
