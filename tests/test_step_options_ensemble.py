"""ensemble_stream's step options: member k trains as epoch_stream with the same options."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import ensemble_stream, epoch_stream

torch.manual_seed(6)
X = torch.randn(70, 3)
LABELS = (X[:, 0] - X[:, 1] > 0).long()
LRS = [0.01, 0.05, 0.2]
EPOCHS = 3
STEPS = 5  # batches of 16 in 70 rows

Make = Callable[[nn.Module, float], torch.optim.Optimizer]
OPTIMIZERS: dict[str, Make] = {
    "sgd": lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9),
    "adamw": lambda m, lr: torch.optim.AdamW(m.parameters(), lr=lr / 10, weight_decay=0.1),
    "rprop": lambda m, lr: torch.optim.Rprop(m.parameters(), lr=lr / 10),  # member by member
}


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == labels).float().mean()


def accuracy_read_back(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred.argmax(-1) == labels).float().mean().item())  # cannot run under vmap


class Correct:
    """A stateful metric: the count of correct rows (torchmetrics' protocol)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = torch.tensor(0.0)

    def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self.n = self.n + (pred.argmax(-1) == labels).sum()

    def compute(self) -> torch.Tensor:
        return self.n


def _member(k: int, kind: str, schedule: bool) -> tuple[nn.Module, Any, Any]:
    torch.manual_seed(k)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = OPTIMIZERS[kind](model, LRS[k])
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, opt.param_groups[0]["lr"] * 4, EPOCHS * STEPS, cycle_momentum=kind != "rprop"
        )
        if schedule
        else None
    )
    return model, opt, sched


def _alone(
    data: tuple[torch.Tensor, ...], model: nn.Module, opt: Any, epochs: int, **options: Any
) -> list[dict[str, Any]]:
    """The member's lone epoch_stream run with the same options (in order, no shuffling)."""
    events = epoch_stream(
        data, model, opt, nn.CrossEntropyLoss(), batch_size=16, shuffle=False, **options
    )
    return list(islice(events, epochs))


CASES = {
    "clip": {"clip_grad_norm": 0.3},
    "accumulate": {"accumulate": 2},
    "schedulers": {},
    "train_metrics": {"train_metrics": {"acc": accuracy, "correct": Correct()}},
    "clip+accumulate+schedulers": {"clip_grad_value": 0.05, "accumulate": 3},
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_member_equals_its_epoch_stream_with_the_same_options(kind: str, case: str) -> None:
    schedule = "schedulers" in case
    options = dict(CASES[case])
    members = [_member(k, kind, schedule) for k in range(len(LRS))]
    models, opts = [m for m, _, _ in members], [o for _, o, _ in members]
    scheds = [s for _, _, s in members] if schedule else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Rprop: "steps member by member"
        events = ensemble_stream(
            (X, LABELS), models, opts, nn.CrossEntropyLoss(), batch_size=16, shuffle=False,
            schedulers=scheds, **options,
        )  # fmt: skip
        together = list(islice(events, EPOCHS))
    for k in range(len(LRS)):
        model, opt, sched = _member(k, kind, schedule)
        alone = _alone((X, LABELS), model, opt, EPOCHS, schedulers=sched, **options)
        for mine, lone in zip(together, alone, strict=True):
            assert mine["train_loss"][k] == pytest.approx(lone["train_loss"], rel=1e-5)
            assert mine["lr"][k] == pytest.approx(lone["lr"])
            for key in ("train_acc", "train_correct"):
                if key in lone:
                    assert mine[key][k] == pytest.approx(lone[key], abs=1e-6)
        for p, q in zip(model.parameters(), models[k].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_schedulers_raise_no_ordering_warning_on_the_vectorised_step() -> None:
    members = [_member(k, "sgd", True) for k in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        events = ensemble_stream(
            (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
            nn.CrossEntropyLoss(), batch_size=16, schedulers=[s for _, _, s in members],
        )  # fmt: skip
        list(islice(events, 2))
    assert all(s.last_epoch == 2 * STEPS for _, _, s in members)


def test_the_members_setting_is_the_rate_its_schedule_started_from() -> None:
    members = [_member(k, "sgd", True) for k in range(2)]
    events = ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, schedulers=[s for _, _, s in members],
    )  # fmt: skip
    first, second = islice(events, 2)
    assert first["model"].hparams[1]["lr"] == second["model"].hparams[1]["lr"]
    assert first["lr"][1] != second["lr"][1]


def test_a_plain_metric_that_cannot_run_under_vmap_is_called_per_member() -> None:
    members = [_member(k, "sgd", False) for k in range(3)]
    events = ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, shuffle=False,
        train_metrics={"fast": accuracy, "slow": accuracy_read_back},
    )  # fmt: skip
    for event in islice(events, 2):
        assert event["train_slow"] == pytest.approx(event["train_fast"])
        assert len(event["train_fast"]) == 3


def test_members_on_their_own_rows_keep_their_schedules_and_metrics() -> None:
    rows = [torch.arange(0, 70), torch.arange(0, 40), torch.arange(10, 60)]
    members = [_member(k, "adamw", True) for k in range(3)]
    events = ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, shuffle=False, rows=rows,
        schedulers=[s for _, _, s in members], train_metrics={"acc": accuracy},
    )  # fmt: skip
    together = list(islice(events, 2))
    for k, own in enumerate(rows):
        model, opt, sched = _member(k, "adamw", True)
        alone = _alone(
            (X[own], LABELS[own]), model, opt, 2, schedulers=sched, train_metrics={"acc": accuracy}
        )
        for mine, lone in zip(together, alone, strict=True):
            assert mine["train_loss"][k] == pytest.approx(lone["train_loss"], rel=1e-5)
            assert mine["train_acc"][k] == pytest.approx(lone["train_acc"], abs=1e-6)
            assert mine["lr"][k] == pytest.approx(lone["lr"])
        assert sched.last_epoch == members[k][2].last_epoch  # a held member's does not step


def test_autocast_bfloat16_trains_each_member_within_the_bfloat16_tolerance() -> None:
    members = [_member(k, "sgd", False) for k in range(2)]
    events = ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, shuffle=False, autocast=torch.bfloat16,
    )  # fmt: skip
    together = list(islice(events, 2))
    for k in range(2):
        model, opt, _ = _member(k, "sgd", False)
        alone = _alone((X, LABELS), model, opt, 2, autocast=torch.bfloat16)
        for mine, lone in zip(together, alone, strict=True):
            # vmapped bfloat16 matmuls round apart from one model's: the bfloat16 tolerance
            assert mine["train_loss"][k] == pytest.approx(lone["train_loss"], rel=2e-2)


def test_a_frozen_members_scheduler_stops_with_it() -> None:
    members = [_member(k, "sgd", True) for k in range(2)]
    events = ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, schedulers=[s for _, _, s in members],
    )  # fmt: skip
    first = next(events)
    first["model"].freeze(0)
    next(events)
    assert [s.last_epoch for _, _, s in members] == [STEPS, 2 * STEPS]


def _call(**options: Any) -> Any:
    members = [_member(k, "sgd", False) for k in range(2)]
    return ensemble_stream(
        (X, LABELS), [m for m, _, _ in members], [o for _, o, _ in members],
        nn.CrossEntropyLoss(), batch_size=16, **options,
    )  # fmt: skip


def _schedulers(count: int, swap: bool = False) -> list[Any]:
    members = [_member(k, "sgd", False) for k in range(count)]
    return [torch.optim.lr_scheduler.StepLR(o, 1) for _, o, _ in members]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"schedulers": _schedulers(3)},
            ValueError,
            r"'schedulers' must hold one scheduler per member's optimizer: got 3 for 2",
        ),
        (
            {"schedulers": _schedulers(1)[0]},
            TypeError,
            r"'schedulers' must be a list of LR schedulers",
        ),
        (
            {"schedulers": _schedulers(2)},
            ValueError,
            r"'schedulers\[0\]' steps another optimizer than 'optimizers\[0\]'",
        ),
        ({"accumulate": -1}, ValueError, r"'accumulate' must be a positive int, got -1"),
        (
            {"train_metrics": {"acc": Correct}},
            TypeError,
            r"'train_metrics\['acc'\]' is the class Correct, not a metric",
        ),
        (
            {"accumulate": 2, "rows": [torch.arange(70), torch.arange(40)]},
            ValueError,
            r"accumulate=2 needs every member to have as many 'rows'.*\[40, 70\]",
        ),
        ({"autocast": torch.float16}, ValueError, r"autocast=torch.float16 is refused on the CPU"),
    ],
)
def test_bad_step_options_are_refused_at_the_call(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"^ensemble_stream: {match}"):
        _call(**options)


def test_a_scheduler_over_another_members_optimizer_is_named() -> None:
    members = [_member(k, "sgd", False) for k in range(2)]
    opts = [o for _, o, _ in members]
    scheds = [
        torch.optim.lr_scheduler.StepLR(opts[1], 1),
        torch.optim.lr_scheduler.StepLR(opts[0], 1),
    ]
    with pytest.raises(
        ValueError, match=r"'schedulers\[0\]' steps .*\(it is over optimizers\[1\]\)"
    ):
        ensemble_stream(
            (X, LABELS), [m for m, _, _ in members], opts, nn.CrossEntropyLoss(),
            schedulers=scheds,
        )  # fmt: skip


def test_replacing_a_member_of_a_scheduled_stream_is_refused() -> None:
    members = [_member(k, "sgd", True) for k in range(2)]
    event = next(
        ensemble_stream(
            (X, LABELS),
            [m for m, _, _ in members],
            [o for _, o, _ in members],
            nn.CrossEntropyLoss(),
            batch_size=16,
            schedulers=[s for _, _, s in members],
        )
    )
    newcomer, opt, _ = _member(2, "sgd", False)
    with pytest.raises(ValueError, match=r"Ensemble.replace: the stream steps a scheduler per"):
        event["model"].replace(0, newcomer, opt)
