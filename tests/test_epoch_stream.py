from __future__ import annotations

import gc
import math
import weakref
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import Event, epoch_stream


def _regression(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.randn(n, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return X, y


def _setup(lr: float = 0.05) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_events_have_the_documented_keys_and_types() -> None:
    model, opt = _setup()
    event = next(epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=8))
    assert isinstance(event, Event)
    assert list(event) == ["step", "model", "optimizer", "train_loss", "train_time_sec", "lr"]
    assert event["step"] == 1
    assert event["model"] is model
    assert event["optimizer"] is opt
    assert event["lr"] == 0.05
    assert type(event["train_loss"]) is float
    assert type(event["train_time_sec"]) is float
    assert event["train_time_sec"] > 0


def test_steps_count_from_one_plus_the_offset_and_the_loss_falls() -> None:
    model, opt = _setup()
    events = list(islice(epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=8), 30))
    assert [ev["step"] for ev in events] == list(range(1, 31))
    assert events[-1]["train_loss"] < 0.1 * events[0]["train_loss"]

    model, opt = _setup()
    stream = epoch_stream(_regression(), model, opt, nn.MSELoss(), step_offset=10)
    assert [ev["step"] for ev in islice(stream, 3)] == [11, 12, 13]


def test_train_loss_is_the_sample_weighted_mean_over_a_short_last_batch() -> None:
    X = torch.tensor([[1.0], [2.0], [3.0], [4.0], [10.0]])
    y = torch.zeros(5, 1)
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    event = next(epoch_stream((X, y), model, frozen, nn.MSELoss(), batch_size=2, shuffle=False))
    # Per-batch means would give (2.5 + 12.5 + 100) / 3; weighting by rows gives the plain mean.
    assert event["train_loss"] == pytest.approx((X**2).mean().item())


def test_train_loss_with_batches_that_divide_the_data_evenly() -> None:
    X = torch.arange(1.0, 7.0).unsqueeze(1)
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    stream = epoch_stream((X, torch.zeros(6, 1)), model, frozen, nn.MSELoss(), batch_size=3)
    assert next(stream)["train_loss"] == pytest.approx((X**2).mean().item())


def test_matches_a_hand_written_loop_step_for_step() -> None:
    X, y = _regression(50)
    model_a, opt_a = _setup()
    model_b, opt_b = _setup()
    model_b.load_state_dict(model_a.state_dict())
    events = epoch_stream(
        (X, y),
        model_a,
        opt_a,
        nn.MSELoss(),
        batch_size=16,
        generator=torch.Generator().manual_seed(7),
    )
    g = torch.Generator().manual_seed(7)
    for event in islice(events, 3):
        perm = torch.randperm(50, generator=g)
        total = 0.0
        for start in range(0, 50, 16):
            idx = perm[start : start + 16]
            opt_b.zero_grad()
            loss = nn.functional.mse_loss(model_b(X[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt_b.step()
            total += loss.item() * len(idx)
        assert event["train_loss"] == pytest.approx(total / 50, rel=1e-5)
        for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
            torch.testing.assert_close(a, b)


def test_several_inputs_before_the_label() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 1)
            self.b = nn.Linear(3, 1)

        def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.a(left) + self.b(right)
            return out

    left, right = torch.randn(30, 2), torch.randn(30, 3)
    y = left.sum(1, keepdim=True) - right.sum(1, keepdim=True)
    model = TwoInputs()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    events = list(
        islice(epoch_stream((left, right, y), model, opt, nn.MSELoss(), batch_size=7), 40)
    )
    assert events[-1]["train_loss"] < 0.1 * events[0]["train_loss"]


@pytest.mark.parametrize("n_tensors", [1, 2])
def test_last_label_false_feeds_every_tensor_to_the_model(n_tensors: int) -> None:
    seen: list[int] = []

    class Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0))

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            seen.append(len(xs))
            return self.w * sum(xs, torch.zeros(()))

    data = tuple(torch.ones(5, 1) for _ in range(n_tensors))
    model = Sum()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    stream = epoch_stream(
        data, model, frozen, lambda pred: pred.mean(), batch_size=2, last_label=False
    )
    assert next(stream)["train_loss"] == pytest.approx(2.0 * n_tensors)
    assert seen == [n_tensors] * 3


def test_extra_entries_are_added_to_every_event() -> None:
    model, opt = _setup()
    extra = {"run": "baseline", "seed": 3}
    stream = epoch_stream(_regression(), model, opt, nn.MSELoss(), extra=extra)
    events = list(islice(stream, 2))
    assert all(ev["run"] == "baseline" and ev["seed"] == 3 for ev in events)
    assert list(events[0])[-2:] == ["run", "seed"]
    events[0]["run"] = "changed"
    extra["seed"] = 99
    assert next(stream)["run"] == "baseline"


def test_nothing_trains_until_the_first_next() -> None:
    model, opt = _setup(lr=0.5)
    before = _params(model)
    calls: list[int] = []

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return nn.functional.mse_loss(pred, target)

    stream = epoch_stream(_regression(), model, opt, loss_fn, batch_size=8)
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))
    next(stream)
    assert len(calls) == 5
    assert not all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


def test_each_next_runs_exactly_one_epoch() -> None:
    model, opt = _setup()
    calls: list[int] = []

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return nn.functional.mse_loss(pred, target)

    stream = epoch_stream(_regression(40), model, opt, loss_fn, batch_size=16)
    list(islice(stream, 2))
    assert len(calls) == 6


def test_model_is_put_back_in_train_mode_every_epoch() -> None:
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    stream = epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=40)
    for event in islice(stream, 3):
        event["model"].eval()
    assert modes == [True, True, True]
    assert not model.training


def test_shuffling_changes_the_order_and_the_generator_makes_it_reproducible() -> None:
    X, y = torch.arange(20.0).unsqueeze(1), torch.zeros(20, 1)

    def first_rows(shuffle: bool, seed: int) -> list[float]:
        rows: list[float] = []
        model = nn.Linear(1, 1)
        model.register_forward_pre_hook(lambda m, args: rows.append(args[0][0, 0].item()))
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        g = torch.Generator().manual_seed(seed)
        stream = epoch_stream(
            (X, y), model, opt, nn.MSELoss(), batch_size=5, shuffle=shuffle, generator=g
        )
        list(islice(stream, 2))
        return rows

    assert first_rows(False, 0) == [0.0, 5.0, 10.0, 15.0] * 2
    assert first_rows(True, 1) == first_rows(True, 1)
    assert first_rows(True, 1) != first_rows(True, 2)
    assert first_rows(True, 1)[:4] != first_rows(True, 1)[4:]


def test_nan_and_inf_losses_are_reported_as_they_are() -> None:
    model, opt = _setup()
    X, y = _regression()
    nan_event = next(epoch_stream((X, y), model, opt, lambda p, t: (p - t).mean() * math.nan))
    assert math.isnan(nan_event["train_loss"])
    model, opt = _setup()
    y_inf = y.clone()
    y_inf[3] = math.inf
    inf_event = next(epoch_stream((X, y_inf), model, opt, nn.L1Loss(), batch_size=40))
    assert inf_event["train_loss"] == math.inf


def test_an_error_in_the_loss_function_propagates_unchanged_and_ends_the_stream() -> None:
    model, opt = _setup()
    boom = RuntimeError("loss exploded")
    calls: list[int] = []

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise boom
        return nn.functional.mse_loss(pred, target)

    stream = epoch_stream(_regression(), model, opt, loss_fn, batch_size=8)
    with pytest.raises(RuntimeError, match="loss exploded") as info:
        next(stream)
    assert info.value is boom
    with pytest.raises(StopIteration):
        next(stream)


def _stream_refs() -> tuple[Iterator[dict[str, Any]], list[weakref.ref[Any]]]:
    model, opt = _setup()
    X, y = _regression()
    refs: list[weakref.ref[Any]] = [weakref.ref(obj) for obj in (model, opt, X, y)]
    return epoch_stream((X, y), model, opt, nn.MSELoss(), batch_size=8), refs


@pytest.mark.parametrize("how", ["close", "del", "never-started"])
def test_a_closed_or_dropped_stream_releases_the_model_and_data(how: str) -> None:
    stream, refs = _stream_refs()
    if how != "never-started":
        deque(islice(stream, 2), maxlen=0)  # run two epochs, keep no event
    assert all(ref() is not None for ref in refs)
    if how == "close":
        stream.close()  # type: ignore[attr-defined]
        gc.collect()
        assert all(ref() is None for ref in refs)
    del stream
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_a_stream_that_raised_releases_the_model_and_data() -> None:
    model, opt = _setup()
    X, y = _regression()
    refs = [weakref.ref(obj) for obj in (model, opt, X, y)]

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad")

    stream = epoch_stream((X, y), model, opt, loss_fn)
    del model, opt, X, y
    with pytest.raises(ValueError, match="bad"):
        next(stream)
    del stream
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_an_optimizer_like_object_is_accepted() -> None:
    model = nn.Linear(3, 1)

    class PlainSGD:
        def __init__(self) -> None:
            self.steps = 0
            self.resets = 0

        def zero_grad(self) -> None:
            self.resets += 1
            for p in model.parameters():
                p.grad = None

        def step(self) -> None:
            self.steps += 1
            with torch.no_grad():
                for param in model.parameters():
                    assert param.grad is not None
                    param.sub_(0.05 * param.grad)

    opt = PlainSGD()
    events = list(
        islice(epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=10), 20)  # type: ignore[arg-type]
    )
    assert opt.steps == opt.resets == 80
    assert events[-1]["train_loss"] < events[0]["train_loss"]


def test_works_on_the_meta_device_checks_without_running() -> None:
    model = nn.Linear(3, 1).to("meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = torch.zeros(4, 3, device="meta"), torch.zeros(4, 1, device="meta")
    assert epoch_stream((X, y), model, opt, nn.MSELoss()) is not None


# ----------------------------------------------------------------------------- argument checks


def _call(**overrides: Any) -> Iterator[Event]:
    model, opt = _setup()
    kwargs: dict[str, Any] = {
        "train_data": _regression(),
        "model": model,
        "optimizer": opt,
        "loss_fn": nn.MSELoss(),
    }
    kwargs.update(overrides)
    return epoch_stream(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"train_data": ()}, ValueError, r"'train_data' must hold at least one tensor"),
        (
            {"train_data": (torch.zeros(0, 3), torch.zeros(0, 1))},
            ValueError,
            r"'train_data' holds no samples",
        ),
        (
            {"train_data": (torch.zeros(5, 3), torch.zeros(4, 1))},
            ValueError,
            r"epoch_stream: all tensors in 'train_data' must have the same first dimension.*"
            r"\[5, 4\]",
        ),
        (
            {"train_data": (torch.zeros(5, 3), [0.0] * 5)},
            TypeError,
            r"'train_data\[1\]' must be a torch.Tensor, got list",
        ),
        (
            {"train_data": torch.zeros(5, 3)},
            TypeError,
            r"'train_data' must be a tuple or list of tensors",
        ),
        (
            {"train_data": (torch.zeros(5, 3),)},
            ValueError,
            r"last_label=True needs at least two tensors in 'train_data'.*got 1",
        ),
        ({"batch_size": 0}, ValueError, r"'batch_size' must be a positive int, got 0"),
        ({"batch_size": -3}, ValueError, r"'batch_size' must be a positive int, got -3"),
        ({"batch_size": 2.5}, TypeError, r"'batch_size' must be a positive int, got float: 2.5"),
        ({"batch_size": True}, TypeError, r"'batch_size' must be a positive int, got bool"),
        ({"loss_fn": "mse"}, TypeError, r"epoch_stream: 'loss_fn' must be callable, got str"),
        ({"model": lambda x: x}, TypeError, r"'model' must be a torch.nn.Module, got function"),
        (
            {"optimizer": object()},
            TypeError,
            r"'optimizer' must be a torch optimizer .*got object.*missing step, zero_grad",
        ),
        ({"step_offset": -1}, ValueError, r"'step_offset' must be a non-negative int, got -1"),
        (
            {"step_offset": 1.0},
            TypeError,
            r"'step_offset' must be a non-negative int, got float: 1.0",
        ),
        (
            {"step_offset": True},
            TypeError,
            r"'step_offset' must be a non-negative int, got bool: True",
        ),
        ({"extra": [("run", 1)]}, TypeError, r"'extra' must be a mapping .*got list"),
        ({"extra": {1: "x"}}, TypeError, r"the keys of 'extra' must be str, got \[1\]"),
        (
            {"extra": {"step": 5, "train_loss": 0.0, "run": "a"}},
            ValueError,
            r"'extra' must not set the event's own keys .*got \['step', 'train_loss'\]",
        ),
        ({"generator": 42}, TypeError, r"'generator' must be a torch.Generator or None, got int"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    overrides: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        _call(**overrides)


def test_data_on_another_device_than_the_model_is_refused_at_the_call() -> None:
    model = nn.Linear(3, 1).to("meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"epoch_stream: 'train_data\[0\]' is on device cpu but the model is on meta",
    ):
        epoch_stream(_regression(), model, opt, nn.MSELoss())


def test_tensors_on_different_devices_are_refused_at_the_call() -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = (torch.zeros(4, 3), torch.zeros(4, 1, device="meta"))
    with pytest.raises(
        ValueError, match=r"'train_data\[1\]' is on device meta but 'train_data\[0\]'"
    ):
        epoch_stream(data, model, opt, nn.MSELoss())


def test_a_generator_on_another_device_than_the_data_is_refused_at_the_call() -> None:
    model = nn.Linear(3, 1).to("meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = (torch.zeros(4, 3, device="meta"), torch.zeros(4, 1, device="meta"))
    with pytest.raises(ValueError, match=r"'generator' is on device cpu but the data is on meta"):
        epoch_stream(data, model, opt, nn.MSELoss(), generator=torch.Generator())


@pytest.mark.parametrize(
    ("loss_fn", "error", "pattern"),
    [
        (lambda p, t: 0.5, TypeError, r"'loss_fn' must return a scalar tensor, got float: 0.5"),
        (
            lambda p, t: (p - t) ** 2,
            ValueError,
            r"'loss_fn' must return a scalar tensor .*got a tensor of shape \(8, 1\)",
        ),
        (
            lambda p, t: nn.functional.mse_loss(p.detach(), t),
            ValueError,
            r"the loss returned by 'loss_fn' does not depend on any parameter",
        ),
    ],
)
def test_an_unusable_loss_value_gets_an_error_that_says_what_came(
    loss_fn: Any, error: type[Exception], pattern: str
) -> None:
    model, opt = _setup()
    stream = epoch_stream(_regression(), model, opt, loss_fn, batch_size=8)
    with pytest.raises(error, match=pattern):
        next(stream)


def test_an_error_in_the_model_after_a_good_batch_propagates_unchanged() -> None:
    model, opt = _setup()
    calls: list[int] = []
    boom = RuntimeError("model broke")

    def hook(module: nn.Module, args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise boom

    model.register_forward_pre_hook(hook)
    with pytest.raises(RuntimeError, match="model broke") as info:
        next(epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=8))
    assert info.value is boom


def test_one_host_read_and_one_shuffle_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    shuffles: list[int] = []
    item, randperm = torch.Tensor.item, torch.randperm

    def counting_item(self: torch.Tensor) -> Any:
        reads.append(1)
        return item(self)

    def counting_randperm(*args: Any, **kwargs: Any) -> torch.Tensor:
        shuffles.append(1)
        return randperm(*args, **kwargs)

    model, opt = _setup()
    stream = epoch_stream(_regression(50), model, opt, nn.MSELoss(), batch_size=8)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    monkeypatch.setattr(torch, "randperm", counting_randperm)
    list(islice(stream, 3))
    assert len(reads) == 3  # seven batches an epoch, one .item() (one synchronisation) each
    assert len(shuffles) == 3


def test_gradients_are_reset_to_none_before_each_batch() -> None:
    model, opt = _setup()
    seen: list[bool] = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append(all(p.grad is None for p in m.parameters()))
    )
    list(islice(epoch_stream(_regression(16), model, opt, nn.MSELoss(), batch_size=4), 2))
    assert seen == [True] * 8


def test_lr_is_the_rate_each_epoch_trained_with_and_a_list_for_several_groups() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    opt = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}],
        lr=0.05,
    )
    stream = epoch_stream(_regression(), model, opt, nn.MSELoss(), batch_size=8)
    first = next(stream)
    assert first["lr"] == [0.05, 0.01]
    for group in opt.param_groups:  # changed while the event is held: the next epoch's rate
        group["lr"] /= 10
    assert first["lr"] == [0.05, 0.01]  # the event keeps the rate its epoch used
    assert next(stream)["lr"] == pytest.approx([0.005, 0.001])


def test_an_optimizer_without_param_groups_gives_events_without_lr() -> None:
    model = nn.Linear(3, 1)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)

    class Duck:
        def step(self) -> None:
            inner.step()

        def zero_grad(self) -> None:
            inner.zero_grad()

    event = next(epoch_stream(_regression(), model, Duck(), nn.MSELoss(), batch_size=8))
    assert "lr" not in event
    assert isinstance(event["optimizer"], Duck)


def test_extra_may_not_set_lr_or_optimizer() -> None:
    model, opt = _setup()
    with pytest.raises(ValueError, match=r"must not set the event's own keys .*\['lr'"):
        epoch_stream(_regression(), model, opt, nn.MSELoss(), extra={"lr": 0.1})
