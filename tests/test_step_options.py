"""epoch_stream's step options (accumulate, autocast, schedulers, train_metrics) = the hand loop."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import epoch_stream
from fitstream.sources.single import tuned
from fitstream.sources.step_options import check_step_options

torch.manual_seed(5)
X = torch.randn(70, 3)  # 70 rows in batches of 16: four full batches and a short one
LABELS = (X[:, 0] - X[:, 1] > 0).long()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == labels).float().mean()


class MeanProbability:
    """A stateful metric (the torchmetrics protocol): the mean probability of the label."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = torch.tensor(0.0), 0

    def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        chosen = pred.softmax(-1).gather(1, labels.view(-1, 1))
        self.total = self.total + chosen.sum()
        self.count += len(labels)

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def _hand_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    accumulate: int = 1,
    autocast: torch.dtype | None = None,
    scheduler: Any = None,
) -> list[dict[str, float]]:
    """What a careful user writes by hand for each option (Lightning's accumulation rule)."""
    out = []
    batches = [(s, min(s + 16, len(X))) for s in range(0, len(X), 16)]
    for _ in range(epochs):
        total, correct, rate = 0.0, 0.0, None
        for j, (start, stop) in enumerate(batches):
            xb, yb = X[start:stop], LABELS[start:stop]
            if j % accumulate == 0:
                optimizer.zero_grad(set_to_none=True)
            context = (
                torch.autocast("cpu", dtype=autocast)
                if autocast is not None
                else contextlib.nullcontext()
            )
            with context:
                pred = model(xb)
                loss = nn.functional.cross_entropy(pred, yb)
            (loss / accumulate).backward()
            if (j + 1) % accumulate == 0 or j == len(batches) - 1:
                optimizer.step()
                if scheduler is not None:
                    rate = optimizer.param_groups[0]["lr"]
                    scheduler.step()
            total += loss.item() * len(xb)
            correct += accuracy(pred, yb).item() * len(xb)
        out.append({"train_loss": total / len(X), "train_acc": correct / len(X), "lr": rate})
    return out


def _stream(model: nn.Module, optimizer: torch.optim.Optimizer, **options: Any) -> Iterator[Any]:
    return epoch_stream(
        (X, LABELS), model, optimizer, nn.CrossEntropyLoss(), batch_size=16, shuffle=False,
        **options,
    )  # fmt: skip


def _same_weights(a: nn.Module, b: nn.Module, **tolerance: float) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, **tolerance)


@pytest.mark.parametrize("accumulate", [2, 3, 5, 7])
def test_accumulate_steps_as_the_hand_loop_does(accumulate: int) -> None:
    hand, mine = _model(), _model()
    expected = _hand_loop(
        hand, torch.optim.SGD(hand.parameters(), lr=0.1), 3, accumulate=accumulate
    )
    events = _stream(mine, torch.optim.SGD(mine.parameters(), lr=0.1), accumulate=accumulate)
    got = [ev["train_loss"] for ev in islice(events, 3)]
    assert got == pytest.approx([e["train_loss"] for e in expected], rel=1e-6)
    _same_weights(hand, mine)


def test_accumulate_over_full_groups_equals_one_step_over_the_concatenated_batches() -> None:
    one, two = _model(), _model()
    opt_one = torch.optim.SGD(one.parameters(), lr=0.1)
    opt_two = torch.optim.SGD(two.parameters(), lr=0.1)
    data = (X[:64], LABELS[:64])
    next(epoch_stream(data, one, opt_one, nn.CrossEntropyLoss(), batch_size=32, shuffle=False))
    next(
        epoch_stream(
            data, two, opt_two, nn.CrossEntropyLoss(), batch_size=16, shuffle=False, accumulate=2
        )
    )
    _same_weights(one, two)


def test_autocast_bfloat16_on_the_cpu_is_the_hand_loop_under_autocast() -> None:
    hand, mine, plain = _model(), _model(), _model()
    expected = _hand_loop(
        hand, torch.optim.Adam(hand.parameters(), lr=0.01), 3, autocast=torch.bfloat16
    )
    got = list(
        islice(
            _stream(mine, torch.optim.Adam(mine.parameters(), lr=0.01), autocast=torch.bfloat16), 3
        )
    )
    # the same operations in the same precision: equal within float32 rounding
    assert [ev["train_loss"] for ev in got] == pytest.approx(
        [e["train_loss"] for e in expected], rel=1e-5
    )
    _same_weights(hand, mine)
    # and bfloat16 really ran: the losses differ from float32's beyond float32 rounding
    full = list(islice(_stream(plain, torch.optim.Adam(plain.parameters(), lr=0.01)), 3))
    assert [ev["train_loss"] for ev in full] != pytest.approx(
        [ev["train_loss"] for ev in got], rel=1e-6
    )
    assert [ev["train_loss"] for ev in full] == pytest.approx(
        [ev["train_loss"] for ev in got],
        rel=2e-2,  # the documented bfloat16 tolerance
    )


def test_one_cycle_scheduler_steps_after_every_optimizer_step() -> None:
    hand, mine = _model(), _model()
    hand_opt = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    mine_opt = torch.optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
    total = 4 * 5
    expected = _hand_loop(
        hand, hand_opt, 4, scheduler=torch.optim.lr_scheduler.OneCycleLR(hand_opt, 1.0, total)
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(mine_opt, 1.0, total)
    got = list(islice(_stream(mine, mine_opt, schedulers=scheduler), 4))
    assert [ev["train_loss"] for ev in got] == pytest.approx(
        [e["train_loss"] for e in expected], rel=1e-6
    )
    # the event's lr is the rate the epoch's last step used, not the next one
    assert [ev["lr"] for ev in got] == pytest.approx([e["lr"] for e in expected])
    assert got[-1]["lr"] != mine_opt.param_groups[0]["lr"]
    assert scheduler.last_epoch == total
    _same_weights(hand, mine)


def test_a_scheduler_with_accumulation_steps_once_per_optimizer_step() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    next(_stream(model, opt, schedulers=scheduler, accumulate=2))  # 5 batches: 3 steps
    assert scheduler.last_epoch == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_train_metrics_are_the_outputs_own_sample_weighted_values() -> None:
    hand, mine = _model(), _model()
    expected = _hand_loop(hand, torch.optim.SGD(hand.parameters(), lr=0.1), 3)
    events = _stream(
        mine, torch.optim.SGD(mine.parameters(), lr=0.1),
        train_metrics={"acc": accuracy, "p": MeanProbability()},
    )  # fmt: skip
    got = list(islice(events, 3))
    assert [ev["train_acc"] for ev in got] == pytest.approx([e["train_acc"] for e in expected])
    assert [ev["train_loss"] for ev in got] == pytest.approx(
        [e["train_loss"] for e in expected], rel=1e-6
    )
    assert all(0.0 < ev["train_p"] < 1.0 for ev in got)
    assert all(isinstance(ev["train_acc"], float) for ev in got)
    _same_weights(hand, mine)  # no extra forward, nothing changed in training


def test_a_stateful_train_metric_is_reset_every_epoch() -> None:
    metric = MeanProbability()
    model = _model()
    events = _stream(
        model, torch.optim.SGD(model.parameters(), lr=0.0), train_metrics={"p": metric}
    )
    first, second = islice(events, 2)
    assert metric.count == len(X)  # one epoch's rows, not two
    assert first["train_p"] == pytest.approx(second["train_p"])  # lr 0: the same outputs


def test_train_metrics_cost_one_host_sync_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    events = _stream(
        model, torch.optim.SGD(model.parameters(), lr=0.1),
        train_metrics={"acc": accuracy, "p": MeanProbability()},
    )  # fmt: skip
    next(events)
    calls: list[str] = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(
            self: torch.Tensor, *a: Any, _o: Callable[..., Any] = original, _n: str = name
        ) -> Any:
            calls.append(_n)
            return _o(self, *a)

        monkeypatch.setattr(torch.Tensor, name, counting)
    next(events)
    assert calls == ["tolist"]


def test_options_off_run_the_plain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(tuned.TunedLoop, "__init__", lambda self, *a, **k: built.append(self))
    model = _model()
    next(_stream(model, torch.optim.SGD(model.parameters(), lr=0.1)))
    assert built == []


def test_no_scheduler_warning_and_a_per_epoch_scheduler_stays_a_tap() -> None:
    from fitstream import pipe, tap

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        events = pipe(_stream(model, opt), tap(lambda ev: scheduler.step()))
        rates = [ev["lr"] for ev in islice(events, 3)]
    assert rates == pytest.approx([0.1, 0.05, 0.025])


def _call(**options: Any) -> Iterator[Any]:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return _stream(model, opt, **options)


OTHER = torch.optim.SGD(_model().parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"accumulate": 0}, ValueError, r"'accumulate' must be a positive int, got 0"),
        ({"accumulate": 2.0}, TypeError, r"'accumulate' must be a positive int, got float"),
        ({"accumulate": True}, TypeError, r"'accumulate' must be a positive int, got bool"),
        ({"autocast": "bf16"}, TypeError, r"'autocast' must be a torch dtype .*got str"),
        ({"autocast": torch.int8}, ValueError, r"'autocast' must be a float dtype .*not a float"),
        ({"autocast": torch.float32}, ValueError, r"'autocast' must be a half-precision dtype"),
        ({"autocast": torch.float16}, ValueError, r"autocast=torch.float16 is refused on the CPU"),
        (
            {"schedulers": torch.optim.lr_scheduler.StepLR(OTHER, 1)},
            ValueError,
            r"'schedulers' steps another optimizer than 'optimizer'",
        ),
        (
            {"schedulers": [torch.optim.lr_scheduler.StepLR(OTHER, 1)]},
            TypeError,
            r"'schedulers' must be one LR scheduler",
        ),
        (
            {"schedulers": torch.optim.lr_scheduler.StepLR},
            TypeError,
            r"'schedulers' must be a torch LR scheduler",
        ),
        (
            {"schedulers": torch.optim.lr_scheduler.ReduceLROnPlateau(OTHER)},
            TypeError,
            r"'schedulers' is a ReduceLROnPlateau.*reduce_lr_on_plateau stage",
        ),
        ({"train_metrics": [accuracy]}, TypeError, r"'train_metrics' must be a non-empty mapping"),
        ({"train_metrics": {}}, TypeError, r"'train_metrics' must be a non-empty mapping"),
        (
            {"train_metrics": {"loss": accuracy}},
            ValueError,
            r"train_metrics\['loss'\] would be reported as 'train_loss', the event's own key",
        ),
        (
            {"train_metrics": {"run": accuracy}, "extra": {"train_run": 1}},
            ValueError,
            r"train_metrics\['run'\] would be reported as 'train_run', a key of 'extra'",
        ),
        (
            {"train_metrics": {"ce": nn.CrossEntropyLoss}},
            TypeError,
            r"'train_metrics\['ce'\]' is the class CrossEntropyLoss, not a metric",
        ),
        ({"train_metrics": {"acc": 3}}, TypeError, r"'train_metrics\['acc'\]' must be a metric"),
    ],
)
def test_bad_step_options_are_refused_at_the_call_naming_the_keyword(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"^epoch_stream: {match}"):
        _call(**options)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"accumulate": 2}, "accumulate is"),
        ({"train_metrics": {"acc": accuracy}}, "train_metrics is"),
        ({"clip_grad_norm": 1.0, "accumulate": 2}, "accumulate is"),  # clipping is captured
        ({"accumulate": 2, "train_metrics": {"acc": accuracy}}, "accumulate, train_metrics are"),
    ],
)
def test_the_graphed_step_refuses_the_options_it_does_not_capture(
    option: dict[str, Any], named: str
) -> None:
    given = {
        "clip_grad_norm": None, "clip_grad_value": None, "accumulate": 1, "autocast": None,
        "schedulers": None, "train_metrics": None, **option,
    }  # fmt: skip
    with pytest.raises(ValueError, match=f"^f: {named} not captured in the CUDA graph"):
        check_step_options(
            **given, optimizers=[OTHER], device=torch.device("cpu"), extra={},
            cuda_graphs=True, ensemble=False, func="f",
        )  # fmt: skip


@pytest.mark.parametrize(
    "option", [{"clip_grad_norm": 1.0}, {"clip_grad_value": 0.1}, {"autocast": torch.bfloat16}]
)
def test_the_graphed_step_takes_what_it_captures(option: dict[str, Any]) -> None:
    given = {
        "clip_grad_norm": None, "clip_grad_value": None, "accumulate": 1, "autocast": None,
        "schedulers": None, "train_metrics": None, **option,
    }  # fmt: skip
    options = check_step_options(
        **given, optimizers=[OTHER], device=torch.device("cpu"), extra={}, cuda_graphs=True,
        ensemble=False, func="f",
    )  # fmt: skip
    assert not options.plain


def test_a_failing_train_metric_propagates_naming_itself_and_ends_the_stream() -> None:
    def broken(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    events = _call(train_metrics={"bad": broken})
    with pytest.raises(RuntimeError, match="boom") as info:
        next(events)
    notes = getattr(info.value, "__notes__", None)
    if notes is not None:  # Python 3.11+
        assert any("train metric 'bad'" in note for note in notes)
    with pytest.raises(StopIteration):
        next(events)
