"""The stacked MLP's forward pass (sources/ensemble/mlp.py) and what its speed-ups must not change.

An activation runs in place only on a product of the same pass with no gradient recorded, so
the user's data is never written; an ensemble of MLPs is evaluated without switching its
members' train/eval flags (none of its modules reads them), and gives the values each member
gives alone; the members' links are still checked after epochs in which they held.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fitstream import Ensemble, ensemble_stream, evaluate, take
from fitstream.sources.ensemble.mlp import activate, mlp_plan, stacked_linear

K, B, D, C = 3, 20, 5, 4


def _mlps(first: nn.Module | None = None) -> list[nn.Module]:
    torch.manual_seed(0)
    head = [] if first is None else [first]
    return [
        nn.Sequential(*copy.deepcopy(head), nn.Linear(D, 6), nn.ReLU(), nn.Linear(6, C))
        for _ in range(K)
    ]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == labels).float().mean()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Tanh(), nn.Sigmoid()])
def test_an_activation_runs_in_place_only_on_a_fresh_product_without_gradients(
    act: nn.Module,
) -> None:
    h = torch.randn(4, 3)
    expected = act(h)
    with torch.no_grad():
        kept = h.clone()
        assert activate(act, kept, fresh=False) is not kept  # not ours to write
        torch.testing.assert_close(kept, h)
        out = activate(act, kept, fresh=True)
    assert out is kept
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    fresh = h.clone().requires_grad_()
    out = activate(act, fresh, fresh=True)  # gradients recorded: a new tensor
    assert out is not fresh


def test_an_activation_whose_gradient_reads_its_input_never_runs_in_place() -> None:
    h = torch.randn(4, 3)
    with torch.no_grad():
        out = activate(nn.GELU(), h, fresh=True)
    assert out is not h


def test_stacked_linear_equals_each_members_linear() -> None:
    members = _mlps()
    plan = mlp_plan(members[0])
    assert plan is not None
    x = torch.randn(K, B, D)
    weight = torch.stack([m[0].weight.detach() for m in members])
    bias = torch.stack([m[0].bias.detach() for m in members])
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = stacked_linear(x, weight, bias)
        for k, m in enumerate(members):
            torch.testing.assert_close(out[k], m[0](x[k]).detach())


def test_mlp_plan_takes_linears_and_elementwise_activations_only() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1, bias=False))
    assert mlp_plan(model) == [("0.weight", "0.bias"), model[1], ("2.weight", None)]
    assert mlp_plan(nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.Linear(3, 1))) is None
    assert mlp_plan(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))) is None
    assert mlp_plan(nn.Sequential(nn.ReLU())) is None  # no layer
    assert mlp_plan(nn.Linear(2, 3)) is None  # not a Sequential


def test_an_activation_first_leaves_the_users_data_as_it_was() -> None:
    X, y = _data()
    before = X.clone()
    members = _mlps(first=nn.ReLU())
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in members]
    events = ensemble_stream((X, y), members, opts, nn.CrossEntropyLoss(), batch_size=8)
    check = evaluate((X, y), metrics={"acc": _accuracy})
    for event in take(events, 2):
        check(event)
        with torch.no_grad():
            event["model"](X)  # the shared-input forward
    torch.testing.assert_close(X, before, rtol=0, atol=0)


def test_an_mlp_ensemble_is_evaluated_as_each_member_alone_with_its_flags_untouched() -> None:
    X, y = _data()
    members = _mlps()
    members[1][1].eval()  # a member's own flag, which evaluation must leave as it is
    ensemble = Ensemble(members)
    flags = [[m.training for m in member.modules()] for member in members]
    seen: list[bool] = []

    def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append(ensemble.training)
        return _accuracy(pred, labels)

    values = evaluate((X, y), metrics={"acc": accuracy})({"model": ensemble})
    assert seen
    assert not any(seen)  # the ensemble itself is in eval mode while it runs
    assert ensemble.training
    assert [[m.training for m in member.modules()] for member in members] == flags
    with torch.no_grad():
        alone = [_accuracy(member(X), y).item() for member in members]
    assert values["acc"] == pytest.approx(alone)


def test_an_mlp_ensembles_flag_comes_back_when_a_metric_raises() -> None:
    X, y = _data()
    ensemble = Ensemble(_mlps())

    def broken(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise ValueError("metric failed")

    with pytest.raises(ValueError, match="metric failed"):
        evaluate((X, y), metrics={"acc": broken})({"model": ensemble})
    assert ensemble.training


def test_a_member_with_dropout_is_still_evaluated_in_eval_mode() -> None:
    X, y = _data()
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Linear(D, 6), nn.Dropout(0.9), nn.Linear(6, C)) for _ in range(K)]
    ensemble = Ensemble(members)
    first = evaluate((X, y), metrics={"acc": _accuracy})({"model": ensemble})
    again = evaluate((X, y), metrics={"acc": _accuracy})({"model": ensemble})
    assert first == again  # no dropout drawn: eval mode
    assert all(m.training for member in members for m in member.modules())


def test_the_members_are_checked_again_once_the_stack_is_replaced() -> None:
    X, y = _data()
    members = _mlps()
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in members]
    events = ensemble_stream((X, y), members, opts, nn.CrossEntropyLoss(), batch_size=8)
    for _ in range(2):
        next(events)
    with torch.no_grad():
        members[2][0].weight.data = members[2][0].weight.data.clone()  # same dtype and shape
    with pytest.raises(RuntimeError, match=r"models\[2\]'s parameter '0.weight' is no longer"):
        next(events)
