"""``Ensemble.replace``: a new model and optimizer in one slot of a running ensemble.

The promise a search's refilled slot relies on: from the next epoch on, the new member trains
exactly as ``epoch_stream`` would train its model alone (fresh optimizer state, its own step
count from 1), and the other members are untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import Ensemble, ensemble_stream, epoch_stream

X = torch.randn(90, 4)
Y = torch.randn(90, 1)
K = 3


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))


MAKERS: dict[str, Callable[[Any, float], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, dampening=0.2),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "adamw-amsgrad": lambda p, lr: torch.optim.AdamW(p, lr=lr, amsgrad=True),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
}


def _start(make: Callable[[Any, float], torch.optim.Optimizer], **kwargs: Any) -> Any:
    models = [_model(k) for k in range(K)]
    optimizers = [make(m.parameters(), 0.01 * (k + 1)) for k, m in enumerate(models)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = ensemble_stream((X, Y), models, optimizers, nn.MSELoss(), batch_size=16, **kwargs)
    return stream, models


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("frozen", [False, True])
def test_a_new_member_trains_as_alone_and_the_others_are_untouched(name: str, frozen: bool) -> None:
    make = MAKERS[name]
    plain, _ = _start(make, shuffle=False)
    plain_losses = [ev["train_loss"] for ev in islice(plain, 7)]
    stream, _ = _start(make, shuffle=False)
    losses = [next(stream)["train_loss"] for _ in range(2)]
    event = next(stream)
    losses.append(event["train_loss"])
    if frozen:
        event["model"].freeze(1)
    newcomer = _model(50)
    new_optimizer = make(newcomer.parameters(), 0.005)
    event["model"].replace(1, newcomer, new_optimizer, hparams={"trial": 7})
    assert event["model"].members[1] is newcomer
    assert event["model"].active == (True, True, True)
    later = list(islice(stream, 4))
    alone_model = _model(50)
    alone = epoch_stream((X, Y), alone_model, make(alone_model.parameters(), 0.005),
                         nn.MSELoss(), batch_size=16, shuffle=False)  # fmt: skip
    alone_losses = [ev["train_loss"] for ev in islice(alone, 4)]
    assert [ev["train_loss"][1] for ev in later] == pytest.approx(alone_losses, rel=2e-4)
    for mine, theirs in zip(newcomer.parameters(), alone_model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=2e-4, atol=1e-6)
    for k in (0, 2):  # untouched
        member = [epoch[k] for epoch in losses] + [ev["train_loss"][k] for ev in later]
        assert member == pytest.approx([epoch[k] for epoch in plain_losses], rel=1e-6)
    hparams = later[-1]["model"].hparams[1]
    assert hparams["trial"] == 7
    assert hparams["lr"] == 0.005
    assert later[-1]["optimizer"][1] is new_optimizer
    assert later[-1]["lr"][1] == 0.005


def test_a_new_member_with_its_own_generator_follows_that_generators_orders() -> None:
    generators = [torch.Generator().manual_seed(k) for k in range(K)]
    stream, _ = _start(MAKERS["adam"], generator=generators)
    event = next(stream)
    newcomer = _model(9)
    event["model"].replace(0, newcomer, torch.optim.Adam(newcomer.parameters(), lr=0.02))
    state = generators[0].get_state()
    later = [ev["train_loss"][0] for ev in islice(stream, 3)]
    alone_model = _model(9)
    g = torch.Generator()
    g.set_state(state)
    alone = epoch_stream((X, Y), alone_model, torch.optim.Adam(alone_model.parameters(), lr=0.02),
                         nn.MSELoss(), batch_size=16, generator=g)  # fmt: skip
    assert later == pytest.approx([ev["train_loss"] for ev in islice(alone, 3)], rel=2e-4)


def test_the_new_members_adam_state_counts_its_own_steps() -> None:
    stream, _ = _start(MAKERS["adam"], shuffle=False)
    event = next(stream)
    newcomer = _model(3)
    optimizer = torch.optim.Adam(newcomer.parameters(), lr=0.01)
    event["model"].replace(2, newcomer, optimizer)
    next(stream)
    steps = {float(s["step"]) for s in optimizer.state_dict()["state"].values()}
    assert steps == {6.0}  # 90 rows in batches of 16: one epoch of its own
    assert float(event["optimizer"][0].state_dict()["state"][0]["step"]) == 12.0


BAD = [
    (lambda ens: ens.replace(3, _model(1), torch.optim.Adam(_model(1).parameters())), IndexError,
     r"Ensemble.replace: 'member' must be in range\(3\), got 3"),
    (lambda ens: ens.replace("1", _model(1), None), TypeError, r"'member' must be an int"),
    (lambda ens: ens.replace(1, nn.Linear(4, 1), None), ValueError,
     r"Ensemble.replace: 'models\[1\]' differs"),
    (lambda ens: ens.replace(1, ens.members[0], None), ValueError, r"already a member"),
    (lambda ens: _replace_with(ens, lambda m: torch.optim.SGD(m.parameters(), lr=0.1)), TypeError,
     r"vectorised Adam or AdamW step, so 'optimizer' must be one of \['Adam', 'AdamW'\], got SGD"),
    (lambda ens: ens.replace(1, _model(1), torch.optim.Adam(_model(2).parameters())), ValueError,
     r"belongs to none of 'models'"),
    (lambda ens: _replace_with(ens, lambda m: torch.optim.Adam(m.parameters()), {"lr": 1}),
     ValueError, r"'hparams\[0\]' sets 'lr'"),
]  # fmt: skip


def _replace_with(ens: Any, make: Any, hparams: Any = None) -> None:
    model = _model(1)
    ens.replace(1, model, make(model), hparams=hparams)


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_newcomers_are_refused_and_change_nothing(call: Any, error: Any, match: str) -> None:
    stream, models = _start(MAKERS["adam"], shuffle=False)
    event = next(stream)
    before = [p.detach().clone() for m in models for p in m.parameters()]
    with pytest.raises(error, match=match):
        call(event["model"])
    assert event["model"].members == tuple(models)
    after = [p.detach() for m in models for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_an_ensemble_built_by_hand_cannot_take_a_new_member() -> None:
    ensemble = Ensemble([_model(k) for k in range(2)])
    model = _model(5)
    with pytest.raises(TypeError, match="only the ensemble of a running ensemble_stream"):
        ensemble.replace(0, model, torch.optim.Adam(model.parameters()))
