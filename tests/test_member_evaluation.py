"""validation_loss and evaluate on ensemble events: one pass per chunk, per-member lists.

Each member's value must equal evaluating that member alone (the single-model augmenter on
``members[k]``), with chunking, eval mode and no-grad as for one model.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import augment, early_stop, evaluate, pipe, validation_loss


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(50, 3), torch.randn(50, 1)


def alone(augmenter: Any, member: nn.Module) -> dict[str, float]:
    result: dict[str, float] = augmenter({"step": 1, "model": member})
    return result


@pytest.mark.parametrize("batch_size", [None, 7, 50, 64])
def test_validation_loss_per_member_equals_each_member_alone(
    stand_in_ensemble: Any, data: Any, batch_size: int | None
) -> None:
    ensemble = stand_in_ensemble(4)
    add = validation_loss(data, nn.MSELoss(), batch_size=batch_size)
    added = add({"step": 1, "model": ensemble})
    assert list(added) == ["val_loss"]
    losses = added["val_loss"]
    assert isinstance(losses, list)
    assert len(losses) == 4
    assert all(type(v) is float for v in losses)
    expected = [alone(add, member)["val_loss"] for member in ensemble.members]
    assert losses == pytest.approx(expected, rel=1e-6)
    assert len(set(losses)) == 4  # the members differ, so a mix-up would show


def test_evaluate_per_member_with_plain_and_stateful_metrics(
    stand_in_ensemble: Any,
) -> None:
    X, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    ensemble = stand_in_ensemble(3, n_out=2)

    def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(dim=1) == labels).float().mean()

    class MeanLogit:
        """A stateful metric: the mean of the first logit, accumulated chunk by chunk."""

        def __init__(self) -> None:
            self.total, self.count, self.updates = 0.0, 0, 0

        def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
            self.total += float(pred[:, 0].sum())
            self.count += len(pred)
            self.updates += 1

        def compute(self) -> float:
            return self.total / self.count

        def reset(self) -> None:
            self.total, self.count = 0.0, 0

        def __call__(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
            self.update(pred, labels)

    mean_logit = MeanLogit()
    metrics = {"acc": accuracy, "ce": nn.CrossEntropyLoss(), "logit": mean_logit}
    add = evaluate((X, y), metrics=metrics, batch_size=16)
    added = add({"step": 1, "model": ensemble})
    added_again = add({"step": 2, "model": ensemble})  # clones are reset between evaluations
    assert added == added_again
    assert mean_logit.updates == 0  # the object given is not used for members: clones are
    for k, member in enumerate(ensemble.members):
        own = alone(add, member)
        for name in metrics:
            assert added[name][k] == pytest.approx(own[name], rel=1e-6, abs=1e-7), (name, k)


def test_torchmetrics_metric_is_cloned_per_member(stand_in_ensemble: Any) -> None:
    torchmetrics = pytest.importorskip("torchmetrics")
    X, y = torch.randn(30, 3), torch.randn(30, 1)
    ensemble = stand_in_ensemble(2)
    add = evaluate((X, y), metrics={"mse": torchmetrics.MeanSquaredError()}, batch_size=8)
    added = add({"step": 1, "model": ensemble})
    expected = [
        alone(validation_loss((X, y), nn.MSELoss()), m)["val_loss"] for m in ensemble.members
    ]
    assert added["mse"] == pytest.approx(expected, rel=1e-5)


def test_one_forward_per_chunk_serves_every_member(stand_in_ensemble: Any, data: Any) -> None:
    ensemble = stand_in_ensemble(5)
    calls = {"ensemble": 0, "members": 0}

    def count(name: str) -> Any:
        def hook(*_: Any) -> None:
            calls[name] += 1

        return hook

    ensemble.register_forward_hook(count("ensemble"))
    ensemble.members[0].register_forward_hook(count("members"))
    validation_loss(data, nn.MSELoss(), batch_size=20)({"step": 1, "model": ensemble})
    assert calls["ensemble"] == 3  # 50 samples in chunks of 20
    assert calls["members"] == 3  # member 0 ran once per chunk, inside the ensemble's forward


def test_members_are_evaluated_in_eval_mode_without_grad(stand_in_ensemble: Any, data: Any) -> None:
    ensemble = stand_in_ensemble(3, dropout=0.9)
    ensemble.members[2].eval()  # a member the user keeps in eval mode
    modes_before = [m.training for m in ensemble.modules()]
    grad_seen: list[bool] = []
    ensemble.register_forward_hook(lambda *_: grad_seen.append(torch.is_grad_enabled()))
    add = validation_loss(data, nn.MSELoss())
    first = add({"step": 1, "model": ensemble})["val_loss"]
    second = add({"step": 2, "model": ensemble})["val_loss"]
    assert first == second  # dropout off: deterministic
    assert grad_seen == [False, False]
    assert [m.training for m in ensemble.modules()] == modes_before
    linear = [m[0] for m in ensemble.members]  # the members without their dropout
    assert first == pytest.approx([alone(add, m)["val_loss"] for m in linear], rel=1e-6)


def test_members_outside_the_ensembles_module_tree_are_put_in_eval_mode_and_back(
    stand_in_ensemble: Any, data: Any
) -> None:
    inner = stand_in_ensemble(2, dropout=0.9)
    seen: list[bool] = []

    class Outside(nn.Module):
        """An ensemble whose members are not registered submodules."""

        def __init__(self) -> None:
            super().__init__()
            self.anchor = nn.Linear(1, 1)
            self.__dict__["_inner"] = inner  # not a submodule

        members = property(lambda self: self._inner.members)
        hparams = property(lambda self: self._inner.hparams)
        active = property(lambda self: self._inner.active)

        def freeze(self, member: int) -> None:
            self._inner.freeze(member)

        def __len__(self) -> int:
            return len(self._inner)

        def train(self, mode: bool = True) -> Outside:  # sets every member, as Ensemble does
            super().train(mode)
            for member in self._inner.members:
                member.train(mode)
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(any(m.training for mb in self._inner.members for m in mb.modules()))
            out: torch.Tensor = self._inner(x)
            return out

    inner.members[1][1].eval()  # a submodule of a member the user keeps in eval mode
    before = [m.training for m in inner.modules()]
    validation_loss(data, nn.MSELoss())({"step": 1, "model": Outside()})
    assert seen == [False]
    assert [m.training for m in inner.modules()] == before  # each flag given back


def test_a_forward_that_does_not_stack_the_members_is_refused(
    stand_in_ensemble: Any, data: Any
) -> None:
    ensemble = stand_in_ensemble(3)
    ensemble.forward = ensemble.members[0].forward  # (n, 1): not stacked
    with pytest.raises(
        ValueError,
        match=r"validation_loss: an ensemble's forward must return its 3 members' outputs "
        r"stacked on a new leading dim.*shape=\(50, 1\)",
    ):
        validation_loss(data, nn.MSELoss())({"step": 1, "model": ensemble})


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
def test_a_metric_error_names_the_member(stand_in_ensemble: Any, data: Any) -> None:
    ensemble = stand_in_ensemble(2)
    with torch.no_grad():
        second = ensemble(data[0])[1]  # member 1's predictions

    def fails_on_second(pred: torch.Tensor, labels: torch.Tensor) -> float:
        # torch.equal cannot run under vmap: the metric is called member by member
        if torch.equal(pred, second):
            raise ArithmeticError("bad member")
        return 0.0

    with pytest.raises(ArithmeticError, match="bad member") as info:
        evaluate(data, metrics={"m": fails_on_second})({"step": 1, "model": ensemble})
    assert "(raised by evaluate's metric 'm' on member 1)" in getattr(info.value, "__notes__", [])


def test_validation_loss_feeds_per_member_early_stop(
    stand_in_ensemble: Any, ensemble_events: Any, data: Any
) -> None:
    ensemble = stand_in_ensemble(3)
    # train_epoch moves every active member's weights by +1: their loss grows, so each member
    # stops after `patience` epochs; the stream ends when all have stopped.
    source = ensemble_events(ensemble, {"train_loss": [[0.0, 0.0, 0.0]] * 10})
    events = list(
        pipe(source, augment(validation_loss(data, nn.MSELoss())), early_stop("val_loss", 2))
    )
    assert [ev["step"] for ev in events] == [1, 2, 3]
    assert sorted(ensemble.freezes) == [0, 1, 2]
    assert source.pulled == 3
    assert all(len(ev["val_loss"]) == 3 for ev in events)


def _mlp_ensemble(k: int) -> Any:
    from fitstream import Ensemble

    torch.manual_seed(3)
    return Ensemble([nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)) for _ in range(k)])


def _classes() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randn(47, 3, generator=g), torch.randint(0, 4, (47,), generator=g)


@pytest.mark.parametrize("batch_size", [None, 10])
@pytest.mark.parametrize("layout", ["shared", "rows", "folds"])
def test_plain_metrics_run_once_for_all_members_and_equal_each_member_alone(
    layout: str, batch_size: int | None
) -> None:
    from fitstream import kfold

    X, y = _classes()
    ensemble = _mlp_ensemble(5)
    calls: list[tuple[int, ...]] = []

    def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(pred.shape))
        return (pred.argmax(-1) == labels).float().mean()

    def loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(pred, labels)

    folds = kfold(47, 5, generator=torch.Generator().manual_seed(0))  # 10 or 9 held out
    own = {
        "shared": {},
        "rows": {"rows": [held for _, held in folds]},
        "folds": {"folds": folds},
    }[layout]
    if layout == "folds":
        ensemble._hparams = lambda: [{"fold": k} for k in range(5)]
    metrics = {"acc": accuracy, "loss": loss}
    values = evaluate((X, y), metrics=metrics, batch_size=batch_size, **own)({"model": ensemble})
    # one call per chunk for all the members whose chunks have one size
    if layout == "shared":
        expected = 1 if batch_size is None else 5  # 47 rows: 1 chunk, or 5 of at most 10
    else:  # 10 or 9 rows each: one chunk of 10 (the 9-row members' padded), two sizes
        sizes = sorted(len(held) for _, held in folds)
        assert sizes == [9, 9, 9, 10, 10]
        expected = 2
    assert len(calls) == expected
    for k, member in enumerate(ensemble.members):
        rows = None if layout == "shared" else folds[k][1]
        Xk, yk = (X, y) if rows is None else (X[rows], y[rows])
        lone = evaluate((Xk, yk), metrics=metrics, batch_size=batch_size)({"model": member})
        assert values["acc"][k] == lone["acc"]
        assert values["loss"][k] == pytest.approx(lone["loss"], rel=1e-6)


def test_a_metric_that_cannot_run_under_vmap_is_called_member_by_member_from_then_on() -> None:
    X, y = _classes()
    ensemble = _mlp_ensemble(3)
    calls: list[int] = []

    def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
        calls.append(1)
        return float((pred.argmax(-1) == labels).float().mean())  # reads the value back

    check = evaluate((X, y), metrics={"acc": accuracy})
    first = check({"model": ensemble})
    assert len(calls) == 1 + 3  # the try under vmap, then each member
    second = check({"model": ensemble})
    assert len(calls) == 1 + 3 + 3  # not tried under vmap again
    assert first == second
    for k, member in enumerate(ensemble.members):
        assert (
            first["acc"][k] == evaluate((X, y), metrics={"acc": accuracy})({"model": member})["acc"]
        )
