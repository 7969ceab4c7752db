"""reduce_lr_on_plateau and stop_on_nonfinite: torch equivalence, epoch_stream, ensembles."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from itertools import islice
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    early_stop,
    epoch_stream,
    pipe,
    reduce_lr_on_plateau,
    stop_on_nonfinite,
    take,
)
from fitstream._internal.members import EnsembleLike

NAN, INF = math.nan, math.inf


def _optimizer(lr: float = 1.0, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def _rates(opt: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in opt.param_groups]


class FakeEnsemble:
    """A stand-in for ensemble_stream's event model (the EnsembleLike interface)."""

    def __init__(self, k: int) -> None:
        self._members = [nn.Linear(1, 1) for _ in range(k)]
        self._active = [True] * k
        self.frozen: list[int] = []

    @property
    def members(self) -> Sequence[nn.Module]:
        return self._members

    @property
    def hparams(self) -> Sequence[dict[str, Any]]:
        return [{"lr": 1.0} for _ in self._members]

    @property
    def active(self) -> Sequence[bool]:
        return list(self._active)

    def freeze(self, member: int) -> None:
        self._active[member] = False
        self.frozen.append(member)

    def __len__(self) -> int:
        return len(self._members)


def test_the_fake_ensemble_is_ensemble_like() -> None:
    assert isinstance(FakeEnsemble(2), EnsembleLike)


# -- reduce_lr_on_plateau ------------------------------------------------------------------------

METRICS = [5.0, 4.0, 4.0, 3.9999, 4.1, NAN, 4.0, 2.0, 2.0, 2.0, 2.5, 2.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("delta_mode", ["abs", "rel"])
@pytest.mark.parametrize(
    "case",  # patience, cooldown, min_delta, factor, min_lr
    [(0, 0, 0.0, 0.5, 0.0), (1, 0, 1e-3, 0.1, 0.0), (2, 2, 0.1, 0.5, 0.2), (1, 1, 0.0, 0.3, 0.05)],
)
def test_reduce_lr_on_plateau_matches_torch_event_for_event(
    mode: str, delta_mode: str, case: tuple[int, int, float, float, float]
) -> None:
    patience, cooldown, min_delta, factor, min_lr = case
    values = METRICS if mode == "min" else [10.0 - v for v in METRICS]
    ours, theirs = _optimizer(groups=2), _optimizer(groups=2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        theirs, mode=mode, factor=factor, patience=patience, threshold=min_delta,
        threshold_mode=delta_mode, cooldown=cooldown, min_lr=min_lr,
    )  # fmt: skip
    stage = reduce_lr_on_plateau(
        "val", factor=factor, patience=patience, mode=mode, min_delta=min_delta,  # type: ignore[arg-type]
        delta_mode=delta_mode, cooldown=cooldown, min_lr=min_lr, optimizer=ours,  # type: ignore[arg-type]
    )  # fmt: skip
    seen = []
    for event in stage([{"step": i, "val": v} for i, v in enumerate(values, 1)]):
        scheduler.step(event["val"])
        seen.append((_rates(ours), _rates(theirs)))
    assert [a for a, _ in seen] == [b for _, b in seen]
    assert seen[-1][0] != seen[0][0]  # the sequence did make it reduce


def test_the_next_epoch_of_epoch_stream_trains_with_the_reduced_rate() -> None:
    X = torch.randn(16, 2)
    y = X.sum(1, keepdim=True)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    flat = iter([1.0] * 10)  # never improves after the first
    events = pipe(
        epoch_stream((X, y), model, opt, nn.MSELoss(), batch_size=4),
        lambda evs: ({**ev, "val_loss": next(flat)} for ev in evs),
        reduce_lr_on_plateau("val_loss", patience=1, factor=0.5),  # finds event["optimizer"]
        take(5),
    )
    assert [ev["lr"] for ev in events] == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_min_lr_per_group_and_a_tensor_rate_changed_in_place() -> None:
    opt = _optimizer(groups=2)
    opt.param_groups[1]["lr"] = torch.tensor(1.0)
    tensor_lr = opt.param_groups[1]["lr"]
    stage = reduce_lr_on_plateau("v_loss", patience=0, factor=0.5, min_lr=[0.3, 0.0], optimizer=opt)
    list(stage([{"v_loss": 1.0}] * 4))
    assert _rates(opt) == [0.3, 0.125]
    assert opt.param_groups[1]["lr"] is tensor_lr  # a graph reading it sees the new rate


def test_reduce_lr_on_plateau_is_lazy_and_closes_its_source(counting_source: Any) -> None:
    opt = _optimizer()
    source = counting_source()
    events = pipe(source, reduce_lr_on_plateau("val_loss", optimizer=opt), take(3))
    assert source.pulled == 0
    assert [ev["step"] for ev in events] == [1, 2, 3]
    assert source.pulled == 3
    assert source.closed


def test_reduce_lr_on_plateau_acts_per_member_of_an_ensemble() -> None:
    ensemble, opts = FakeEnsemble(2), [_optimizer(), _optimizer()]
    losses = [[1.0, 1.0], [0.5, 1.0], [0.4, 1.0], [0.3, 1.0]]  # member 1 is on a plateau
    events = [{"step": i, "model": ensemble, "optimizer": opts, "val_loss": v} for i, v in
              enumerate(losses, 1)]  # fmt: skip
    list(reduce_lr_on_plateau(events, "val_loss", patience=1, factor=0.5))
    assert _rates(opts[0]) == [1.0]
    assert _rates(opts[1]) == [0.5]


def test_reduce_lr_on_plateau_finds_a_trainers_optimizers() -> None:
    trainer = SimpleNamespace(optimizers=[_optimizer(), _optimizer()])
    list(reduce_lr_on_plateau([{"v_loss": 1.0, "trainer": trainer}] * 2, "v_loss", patience=0))
    assert [_rates(o) for o in trainer.optimizers] == [[0.1], [0.1]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": 3}, TypeError, r"reduce_lr_on_plateau: 'key' must be a non-empty string"),
        (
            {"key": "v_loss", "factor": 1.0},
            ValueError,
            r"'factor' must be strictly between 0 and 1",
        ),
        ({"key": "v_loss", "factor": "0.1"}, TypeError, r"'factor' must be a number, got str"),
        ({"key": "v_loss", "patience": -1}, ValueError, r"'patience' must be a non-negative int"),
        ({"key": "v_loss", "cooldown": 1.5}, TypeError, r"'cooldown' must be a non-negative int"),
        ({"key": "v_loss", "mode": "low"}, ValueError, r"'mode' must be 'min', 'max' or None"),
        ({"key": "v_loss", "delta_mode": "x"}, ValueError, r"'delta_mode' must be 'abs' or 'rel'"),
        ({"key": "v_loss", "min_delta": -1}, ValueError, r"'min_delta' must be between 0"),
        ({"key": "v_loss", "min_lr": [0.1, -1]}, ValueError, r"'min_lr\[1\]' must be between 0"),
    ],
)
def test_reduce_lr_on_plateau_refuses_bad_arguments_at_the_call(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        reduce_lr_on_plateau(**kwargs)


def test_reduce_lr_on_plateau_without_an_optimizer_names_the_keys() -> None:
    with pytest.raises(KeyError, match=r"no key 'optimizer'; its keys are 'step', 'v_loss'"):
        list(reduce_lr_on_plateau([{"step": 1, "v_loss": 1.0}], "v_loss"))


def test_min_lr_must_have_one_value_per_group() -> None:
    stage = reduce_lr_on_plateau("v_loss", patience=0, min_lr=[0.0], optimizer=_optimizer(groups=2))
    with pytest.raises(ValueError, match=r"'min_lr' has 1 values but .* 2 param groups"):
        list(stage([{"v_loss": 1.0}] * 2))


def test_one_optimizer_per_member_is_required_on_an_ensemble() -> None:
    event = {"model": FakeEnsemble(2), "optimizer": _optimizer(), "v_loss": [1.0, 1.0]}
    with pytest.raises(ValueError, match=r"one value per member \(2\) but there are 1"):
        list(reduce_lr_on_plateau([event], "v_loss"))


# -- stop_on_nonfinite ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_stop_on_nonfinite_passes_the_bad_event_on_then_ends_without_pulling(
    counting_source: Any, bad: float
) -> None:
    source = counting_source(fields=lambda i: {"train_loss": bad if i == 3 else 1.0 / i})
    with pytest.warns(RuntimeWarning, match=r"train_loss is (nan|inf|-inf) at step 3; stopping"):
        events = list(pipe(source, stop_on_nonfinite()))
    assert [ev["step"] for ev in events] == [1, 2, 3]
    assert "stop_reason" not in events[1]
    assert events[-1]["stop_reason"] == f"train_loss is {bad} at step 3"
    assert source.pulled == 3
    assert source.closed


def test_stop_on_nonfinite_watches_the_keys_given_and_can_be_quiet(counting_source: Any) -> None:
    source = counting_source(
        fields=lambda i: {"train_loss": NAN, "val_loss": INF if i == 2 else 0.5}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        events = list(stop_on_nonfinite(source, "val_loss", warn=False))
    assert [ev["step"] for ev in events] == [1, 2]
    assert events[-1]["stop_reason"] == "val_loss is inf at step 2"


def test_stop_on_nonfinite_is_lazy(counting_source: Any) -> None:
    source = counting_source(fields=lambda i: {"train_loss": 1.0})
    stream = pipe(source, stop_on_nonfinite())
    assert source.pulled == 0
    assert next(stream)["step"] == 1
    assert source.pulled == 1


def test_stop_on_nonfinite_stops_a_diverging_epoch_stream() -> None:
    X = torch.randn(32, 2) * 100
    y = X.sum(1, keepdim=True)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=10.0)  # diverges within a few epochs
    with pytest.warns(RuntimeWarning, match="stop_on_nonfinite"):
        events = list(
            pipe(epoch_stream((X, y), model, opt, nn.MSELoss()), stop_on_nonfinite(), take(100))
        )
    assert len(events) < 100
    assert not math.isfinite(events[-1]["train_loss"])
    assert all(math.isfinite(ev["train_loss"]) for ev in events[:-1])


def test_stop_on_nonfinite_freezes_members_and_ends_when_none_is_left() -> None:
    ensemble = FakeEnsemble(3)
    losses = [[1.0, 1.0, 1.0], [1.0, NAN, 1.0], [1.0, NAN, 1.0], [INF, 2.0, NAN], [1.0] * 3]
    events = [{"step": i, "model": ensemble, "train_loss": v} for i, v in enumerate(losses, 1)]
    with pytest.warns(RuntimeWarning) as caught:
        kept = list(stop_on_nonfinite(events))
    assert [str(w.message) for w in caught] == [
        "stop_on_nonfinite: member 1 frozen, train_loss is nan at step 2",
        "stop_on_nonfinite: member 0 frozen, train_loss is inf at step 4",
        "stop_on_nonfinite: member 2 frozen, train_loss is nan at step 4",
        "stop_on_nonfinite: every member stopped: train_loss not finite at step 4; stopping",
    ]
    assert ensemble.frozen == [1, 0, 2]  # each frozen once, at its first non-finite value
    assert [ev["step"] for ev in kept] == [1, 2, 3, 4]
    assert kept[-1]["stop_reason"] == "every member stopped: train_loss not finite at step 4"


def test_stop_on_nonfinite_checks_its_keys_and_names_a_missing_one() -> None:
    with pytest.raises(TypeError, match=r"stop_on_nonfinite: each key must be a non-empty str"):
        stop_on_nonfinite("train_loss", 3)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match=r"no key 'val_loss'; its keys are 'step', 'train_loss'"):
        list(stop_on_nonfinite([{"step": 1, "train_loss": 1.0}], "val_loss"))


def test_stop_on_nonfinite_composes_with_early_stop() -> None:
    events = [{"step": i, "train_loss": 1.0} for i in range(1, 10)]
    kept = list(
        islice(pipe(events, stop_on_nonfinite(), early_stop(key="train_loss", patience=2)), 9)
    )
    assert [ev["step"] for ev in kept] == [1, 2, 3]
