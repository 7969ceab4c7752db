"""``ensemble_stream(rows=...)``: member k trains on its own rows exactly as it would alone.

The member promise with per-member data: member k's per-epoch ``train_loss`` and weights equal
``epoch_stream`` on ``train_data[rows[k]]`` with the same initial weights, optimizer and data
order, also when the members' row counts differ (k-fold with n not divisible by k, a
bootstrap, a member with fewer rows than a batch), so a member with fewer batches takes fewer
steps and a step it sits out moves neither its weights nor its optimizer state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    bootstrap,
    checkpoint,
    early_stop,
    ensemble_stream,
    epoch_stream,
    kfold,
    pipe,
    resume,
    take,
    validation_loss,
)

N = 203  # not divisible by the folds' k nor by the batch size
X = torch.randn(N, 5)
Y = torch.randn(N)
EPOCHS = 4


def _loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(pred.squeeze(-1), target)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01
    ),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "rmsprop (per member)": lambda p: torch.optim.RMSprop(p, lr=0.01),
}


def _uneven_rows() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    folds = [train for train, _ in kfold(N, 3, generator=g)]  # 135 or 136 rows each
    sample = bootstrap(N, 1, generator=g)[0][0]  # repeats
    few = torch.randperm(N, generator=g)[:17]  # fewer rows than one batch
    return [*folds, sample, few]


def _alone(
    rows: torch.Tensor, seed: int, make: Callable[[Any], torch.optim.Optimizer], **kwargs: Any
) -> tuple[list[float], nn.Module]:
    model = _model(seed)
    events = epoch_stream((X[rows], Y[rows]), model, make(model.parameters()), _loss, **kwargs)
    return [ev["train_loss"] for ev in islice(events, EPOCHS)], model


def _assert_member_equals_alone(
    history: list[list[float]], models: list[nn.Module], alone: list[tuple[list[float], nn.Module]]
) -> None:
    for k, (losses, model) in enumerate(alone):
        member = [epoch[k] for epoch in history]
        assert member == pytest.approx(losses, rel=2e-4), f"member {k}"
        for mine, theirs in zip(models[k].parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=2e-4, atol=1e-6)


def _run(
    rows: list[torch.Tensor], make: Callable[[Any], torch.optim.Optimizer], **kwargs: Any
) -> tuple[list[list[float]], list[nn.Module]]:
    models = [_model(k) for k in range(len(rows))]
    optimizers = [make(m.parameters()) for m in models]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RMSprop's "steps one member at a time"
        events = ensemble_stream(
            (X, Y), models, optimizers, _loss, batch_size=32, rows=rows, **kwargs
        )
        history = [ev["train_loss"] for ev in islice(events, EPOCHS)]
    return history, models


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_members_with_uneven_rows_equal_their_runs_alone_without_shuffling(name: str) -> None:
    make = OPTIMIZERS[name]
    rows = _uneven_rows()
    history, models = _run(rows, make, shuffle=False)
    alone = [_alone(r, k, make, batch_size=32, shuffle=False) for k, r in enumerate(rows)]
    _assert_member_equals_alone(history, models, alone)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "adamw-amsgrad"])
def test_members_with_their_own_generators_equal_their_runs_alone(name: str) -> None:
    make = OPTIMIZERS[name]
    rows = _uneven_rows()
    generators = [torch.Generator().manual_seed(10 + k) for k in range(len(rows))]
    history, models = _run(rows, make, shuffle=True, generator=generators)
    alone = [
        _alone(r, k, make, batch_size=32, generator=torch.Generator().manual_seed(10 + k))
        for k, r in enumerate(rows)
    ]
    _assert_member_equals_alone(history, models, alone)


def test_equal_row_counts_take_the_stacked_path_and_equal_their_runs_alone() -> None:
    make = OPTIMIZERS["adam"]
    rows = [train for train, _ in bootstrap(N, 4, generator=torch.Generator().manual_seed(0))]
    generators = [torch.Generator().manual_seed(k) for k in range(4)]
    history, models = _run(rows, make, generator=generators)
    alone = [
        _alone(r, k, make, batch_size=32, generator=torch.Generator().manual_seed(k))
        for k, r in enumerate(rows)
    ]
    _assert_member_equals_alone(history, models, alone)


def test_one_generator_draws_the_members_orders_one_after_the_other() -> None:
    # The documented draw: member k's order is rows[k][randperm(len(rows[k]))], the K
    # permutations drawn from the one generator in member order, every epoch.
    make = OPTIMIZERS["sgd-momentum"]
    rows = _uneven_rows()
    history, models = _run(rows, make, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    epochs = [[torch.randperm(len(r), generator=g) for r in rows] for _ in range(EPOCHS)]
    alone = []
    for k, r in enumerate(rows):
        model = _model(k)
        optimizer = make(model.parameters())
        losses = []
        for orders in epochs:
            ordered = r[orders[k]]
            events = epoch_stream((X[ordered], Y[ordered]), model, optimizer, _loss, batch_size=32,
                                  shuffle=False)  # fmt: skip
            losses.append(next(events)["train_loss"])
            events.close()
        alone.append((losses, model))
    _assert_member_equals_alone(history, models, alone)


def test_a_member_sitting_out_a_step_keeps_its_optimizer_state_as_alone() -> None:
    # Adam's step counts and momentum buffers are those of the member's own steps.
    make = OPTIMIZERS["adam"]
    rows = [torch.arange(100), torch.arange(10)]  # 4 steps per epoch against 1
    model = _model(1)
    optimizer = make(model.parameters())
    list(islice(epoch_stream((X[:10], Y[:10]), model, optimizer, _loss, batch_size=32,
                             shuffle=False), EPOCHS))  # fmt: skip
    ensemble_models = [_model(k) for k in range(2)]
    ensemble_optimizers = [make(m.parameters()) for m in ensemble_models]
    events = ensemble_stream((X, Y), ensemble_models, ensemble_optimizers, _loss, batch_size=32,
                             rows=rows, shuffle=False)  # fmt: skip
    list(islice(events, EPOCHS))
    theirs = optimizer.state_dict()["state"]
    mine = ensemble_optimizers[1].state_dict()["state"]
    steps = [float(mine[i]["step"]) for i in sorted(mine)]
    assert steps == [float(theirs[i]["step"]) for i in sorted(theirs)] == [EPOCHS] * 4
    assert float(ensemble_optimizers[0].state_dict()["state"][0]["step"]) == 4 * EPOCHS
    for i in theirs:
        torch.testing.assert_close(mine[i]["exp_avg"], theirs[i]["exp_avg"], rtol=2e-4, atol=1e-7)


def test_validation_rows_score_each_member_on_its_own_held_out_rows() -> None:
    splits = kfold(N, 3, generator=torch.Generator().manual_seed(0))
    models = [_model(k) for k in range(3)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    events = pipe(
        ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32,
                        rows=[train for train, _ in splits]),
        augment(validation_loss((X, Y), _loss, rows=[val for _, val in splits], batch_size=20)),
        take(2),
    )  # fmt: skip
    for event in events:
        for k, (_, val) in enumerate(splits):
            alone = validation_loss((X[val], Y[val]), _loss, batch_size=20)
            assert event["val_loss"][k] == pytest.approx(
                alone({"model": models[k]})["val_loss"], rel=1e-5
            )


def test_early_stop_freezes_one_fold_on_its_own() -> None:
    splits = kfold(N, 3, generator=torch.Generator().manual_seed(0))
    models = [_model(k) for k in range(3)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    scores = {1: [1.0, 1.0, 1.0], 2: [0.9, 2.0, 0.9], 3: [0.8, 2.0, 0.8], 4: [0.7, 2.0, 0.7]}
    events = pipe(
        ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32,
                        rows=[train for train, _ in splits]),
        augment(lambda ev: {"val_loss": scores[ev["step"]]}),
        early_stop(key="val_loss", patience=1),
        take(4),
    )  # fmt: skip
    seen = []
    for event in events:
        seen.append(tuple(event["model"].active))
        if event["step"] == 3:
            kept = [p.detach().clone() for p in models[1].parameters()]
    assert seen[-1] == (True, False, True)
    for now, before in zip(models[1].parameters(), kept, strict=True):
        assert torch.equal(now, before)


def _resume_stream(
    models: list[nn.Module], optimizers: list[torch.optim.Optimizer], g: torch.Generator,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    return ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32, rows=_uneven_rows(),
                           generator=g, **kwargs)  # fmt: skip


@pytest.mark.parametrize("name", ["sgd-momentum", "adamw-amsgrad"])
def test_a_rows_ensemble_resumes_exactly(tmp_path: Path, name: str) -> None:
    make = OPTIMIZERS[name]

    def build(seed: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        models = [_model(seed + k) for k in range(5)]
        return models, [make(m.parameters()) for m in models]

    straight = [ev["train_loss"] for ev in take(_resume_stream(*build(0), torch.Generator()
                                                               .manual_seed(1)), 10)]  # fmt: skip
    models, optimizers = build(0)
    g = torch.Generator().manual_seed(1)
    path = tmp_path / "rows.ckpt"
    events = pipe(_resume_stream(models, optimizers, g), checkpoint(path, generator=g), take(4))
    first = [ev["train_loss"] for ev in events]
    models, optimizers = build(50)
    g = torch.Generator().manual_seed(99)
    start = resume(path, models, optimizers, generator=g)
    assert start == 4
    rest = [
        ev["train_loss"] for ev in take(_resume_stream(models, optimizers, g, step_offset=start), 6)
    ]
    assert first + rest == straight


def test_the_data_is_never_copied_per_member(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each batch is gathered per member from the shared tensors: no tensor of K x N rows.
    rows = [train for train, _ in kfold(N, 4, generator=torch.Generator().manual_seed(0))]
    models = [_model(k) for k in range(4)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    sizes: list[int] = []

    def spying(original: Any) -> Any:
        def spy(self: torch.Tensor, *args: Any) -> torch.Tensor:
            out = original(self, *args)
            if self is X or self is Y:
                sizes.append(out.numel() // (5 if self is X else 1))
            return out

        return spy

    monkeypatch.setattr(torch.Tensor, "__getitem__", spying(torch.Tensor.__getitem__))
    monkeypatch.setattr(torch.Tensor, "index_select", spying(torch.Tensor.index_select))
    events = ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32, rows=rows)
    list(islice(events, 1))
    assert sizes
    assert max(sizes) <= 4 * 32  # one batch of each member at a time


def _call(**kwargs: Any) -> Any:
    models = [_model(k) for k in range(2)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    return ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32, **kwargs)


BAD_ROWS = [
    ([torch.arange(5)], ValueError, r"'rows' must hold one index tensor per member: got 1 for 2"),
    (torch.arange(5), TypeError, r"'rows' must be a list of 1-D integer tensors.*got Tensor"),
    ([torch.arange(5), [0, 1]], TypeError, r"'rows\[1\]' must be a 1-D integer tensor, got list"),
    ([torch.arange(5), torch.zeros(3)], TypeError, r"'rows\[1\]'.*got dtype torch.float32"),
    ([torch.arange(5), torch.ones(3, dtype=torch.bool)], TypeError, r"dtype torch.bool"),
    ([torch.arange(6).view(2, 3), torch.arange(3)], ValueError, r"'rows\[0\]' must be a 1-D"),
    ([torch.arange(5), torch.arange(0)], ValueError, r"'rows\[1\]' is empty"),
    (
        [torch.arange(5), torch.tensor([1, N])],
        ValueError,
        rf"'rows\[1\]'.*\(0 to {N - 1}\), got {N} at position 1",
    ),
    ([torch.tensor([-1]), torch.arange(3)], ValueError, r"'rows\[0\]'.*got -1 at position 0"),
    (
        [torch.arange(5), torch.arange(3, device="meta")],
        ValueError,
        r"'rows\[1\]' must be on the device of 'train_data' \(cpu\), got it on meta",
    ),
]


@pytest.mark.parametrize(("rows", "error", "match"), BAD_ROWS)
def test_bad_rows_are_refused_at_the_call(rows: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _call(rows=rows)


BAD_HPARAMS = [
    ([{"fold": 0}], ValueError, r"'hparams' must hold one dict per member: got 1 for 2"),
    ({"fold": 0}, TypeError, r"'hparams' must be a list of dicts.*got dict"),
    ([{"fold": 0}, 3], TypeError, r"'hparams\[1\]' must be a dict of plain values, got int"),
    (
        [{"fold": 0}, {"fold": [1]}],
        TypeError,
        r"'hparams\[1\]'\['fold'\] must be a str, int, float or bool.*got list",
    ),
    (
        [{"fold": 0}, {"fold": float("nan")}],
        ValueError,
        r"'hparams\[1\]'\['fold'\] is NaN, which cannot be a setting",
    ),
    (
        [{"fold": 0}, {"lr": 0.1}],
        ValueError,
        r"'hparams\[1\]' sets 'lr', which member 1's optimizer already reports \(lr=0.01\)",
    ),
    ([{"beta1": 0}, {}], ValueError, r"'hparams\[0\]' sets 'beta1'"),
    ([{"step": 0}, {}], ValueError, r"'hparams\[0\]' sets 'step', a key the events"),
    ([{"member": 0}, {}], ValueError, r"sets 'member'"),
    ([{1: 0}, {}], TypeError, r"the keys of 'hparams\[0\]' must be non-empty str"),
]


@pytest.mark.parametrize(("hparams", "error", "match"), BAD_HPARAMS)
def test_bad_hparams_are_refused_at_the_call(
    hparams: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _call(hparams=hparams)


def test_hparams_join_the_optimizers_own_in_the_ensemble() -> None:
    events = _call(hparams=[{"fold": 0, "tag": "a"}, {"fold": 1, "tag": "a"}])
    hparams = next(events)["model"].hparams
    assert hparams[1]["lr"] == 0.01
    assert hparams[1]["fold"] == 1
    assert hparams[0]["tag"] == "a"
    assert list(hparams[0])[-2:] == ["fold", "tag"]  # after the optimizer's own


def test_rows_are_lazy_nothing_trains_before_the_first_next() -> None:
    models = [_model(k) for k in range(2)]
    before = [p.detach().clone() for p in models[0].parameters()]
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32,
                    rows=[torch.arange(5), torch.arange(3)])  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, models[0].parameters(), strict=True))


def test_evaluate_rows_with_a_stateful_metric_equals_each_member_alone() -> None:
    torchmetrics = pytest.importorskip("torchmetrics")
    from fitstream import evaluate

    splits = kfold(N, 4, generator=torch.Generator().manual_seed(2))
    models = [_model(k) for k in range(4)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    events = ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32,
                             rows=[train for train, _ in splits])  # fmt: skip
    event = next(events)

    def metrics() -> dict[str, Any]:
        return {"val_mse": torchmetrics.MeanSquaredError(), "val_l1": _l1}

    y = Y.unsqueeze(1)  # torchmetrics wants the output's shape
    added = evaluate((X, y), metrics=metrics(), rows=[v for _, v in splits], batch_size=16)(event)
    for k, (_, val) in enumerate(splits):
        alone = evaluate((X[val], y[val]), metrics=metrics(), batch_size=16)({"model": models[k]})
        assert added["val_mse"][k] == pytest.approx(alone["val_mse"], rel=1e-5)
        assert added["val_l1"][k] == pytest.approx(alone["val_l1"], rel=1e-5)


def _l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def test_validation_rows_refused_at_the_call_and_at_the_event() -> None:
    with pytest.raises(
        ValueError, match=r"validation_loss: 'rows\[0\]' must index rows of 'val_data'"
    ):
        validation_loss((X, Y), _loss, rows=[torch.tensor([N])])
    with pytest.raises(TypeError, match=r"validation_loss: 'rows' must be a list of 1-D integer"):
        validation_loss((X, Y), _loss, rows=torch.arange(3))
    add = validation_loss((X, Y), _loss, rows=[torch.arange(3), torch.arange(4)])
    with pytest.raises(TypeError, match=r"'rows' scores each member of an ensemble.*single model"):
        add({"model": _model(0)})
    models = [_model(k) for k in range(3)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    event = next(ensemble_stream((X, Y), models, optimizers, _loss, batch_size=32))
    with pytest.raises(
        ValueError, match=r"'rows' holds 2 index tensors, but the event's ensemble has 3"
    ):
        add(event)
