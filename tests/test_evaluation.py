"""validation_loss and evaluate: values, chunking, modes, gradients, syncs and errors."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import evaluate, validation_loss
from fitstream.evaluation import evaluation_mode


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(103, 4), torch.randn(103, 1)


@pytest.fixture
def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))


def one_pass_mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(X), y).item()


def mixed_mode_model() -> nn.Module:
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Sequential(nn.Linear(8, 1))
    )
    model[1].eval()  # a frozen norm layer the user keeps in eval mode
    model[3][0].eval()  # type: ignore[index]
    return model


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


# --- validation_loss: values ---------------------------------------------------------------


def test_validation_loss_equals_one_pass_loss(data: Any, model: nn.Module) -> None:
    X, y = data
    added = validation_loss((X, y), nn.MSELoss())({"step": 1, "model": model})
    assert list(added) == ["val_loss"]
    assert type(added["val_loss"]) is float
    assert added["val_loss"] == pytest.approx(one_pass_mse(model, X, y), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 10, 50, 102, 103, 1000])
def test_chunked_validation_loss_equals_one_pass(
    data: Any, model: nn.Module, batch_size: int
) -> None:
    X, y = data
    added = validation_loss((X, y), nn.MSELoss(), batch_size=batch_size)({"model": model})
    assert added["val_loss"] == pytest.approx(one_pass_mse(model, X, y), rel=1e-6)


def test_custom_key_and_dropout_disabled(data: Any, model: nn.Module) -> None:
    X, y = data
    augmenter = validation_loss((X, y), nn.MSELoss(), key="holdout")
    first, second = augmenter({"model": model}), augmenter({"model": model})
    assert list(first) == ["holdout"]
    assert first == second  # dropout is off during evaluation, so the value is deterministic


def test_several_input_tensors_are_passed_to_the_model() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(3, 1)

        def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.a(x1) + self.b(x2)
            return out

    model = TwoInputs()
    X1, X2, y = torch.randn(20, 2), torch.randn(20, 3), torch.randn(20, 1)
    added = validation_loss((X1, X2, y), nn.MSELoss(), batch_size=7)({"model": model})
    with torch.no_grad():
        expected = nn.functional.mse_loss(model(X1, X2), y).item()
    assert added["val_loss"] == pytest.approx(expected, rel=1e-6)


def test_last_label_false_calls_loss_with_predictions_only(model: nn.Module) -> None:
    X = torch.randn(30, 4)
    calls: list[int] = []

    def mean_output(pred: torch.Tensor) -> torch.Tensor:
        calls.append(pred.shape[0])
        return pred.mean()

    added = validation_loss((X,), mean_output, last_label=False, batch_size=10)({"model": model})
    assert calls == [10, 10, 10]
    model.eval()
    with torch.no_grad():
        assert added["val_loss"] == pytest.approx(model(X).mean().item(), rel=1e-6)


def test_loss_returning_a_python_number(data: Any, model: nn.Module) -> None:
    X, y = data
    added = validation_loss((X, y), lambda p, t: 0.25, batch_size=10)({"model": model})
    assert added == {"val_loss": 0.25}


def test_nan_and_inf_are_reported_as_they_are(data: Any, model: nn.Module) -> None:
    X, y = data
    nan = validation_loss((X, y), lambda p, t: p.sum() * float("nan"))({"model": model})
    assert math.isnan(nan["val_loss"])
    inf = validation_loss((X, y), lambda p, t: torch.tensor(float("inf")), batch_size=9)(
        {"model": model}
    )
    assert inf["val_loss"] == math.inf


# --- gradients and modes -------------------------------------------------------------------


def test_no_gradients_are_recorded(data: Any, model: nn.Module) -> None:
    X, y = data
    seen: list[bool] = []

    def loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append(pred.requires_grad or torch.is_grad_enabled())
        return nn.functional.mse_loss(pred, labels)

    validation_loss((X, y), loss, batch_size=50)({"model": model})
    assert seen == [False, False, False]
    assert all(p.grad is None for p in model.parameters())


def test_every_submodule_is_in_eval_mode_during_evaluation_and_restored_after(
    data: Any,
) -> None:
    X, y = data
    model = mixed_mode_model()
    before = modes(model)
    assert True in before
    assert False in before
    during: list[list[bool]] = []

    def loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        during.append(modes(model))
        return nn.functional.mse_loss(pred, labels)

    validation_loss((X, y), loss, batch_size=40)({"model": model})
    assert during == [[False] * len(before)] * 3
    assert modes(model) == before


def test_modes_are_restored_when_the_loss_raises(data: Any) -> None:
    X, y = data
    model = mixed_mode_model()
    before = modes(model)

    def broken(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise ArithmeticError("metric failed")

    with pytest.raises(ArithmeticError, match="metric failed") as info:
        validation_loss((X, y), broken)({"model": model})
    assert modes(model) == before
    if sys.version_info >= (3, 11):
        assert any("loss_fn" in note for note in info.value.__notes__)


def test_modes_are_restored_when_a_metric_raises_midway(data: Any) -> None:
    X, y = data
    model = mixed_mode_model()
    before = modes(model)
    calls = []

    def fails_on_second_chunk(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second chunk")
        return pred.mean()

    augmenter = evaluate((X, y), metrics={"m": fails_on_second_chunk}, batch_size=30)
    with pytest.raises(RuntimeError, match="second chunk"):
        augmenter({"model": model})
    assert modes(model) == before
    assert torch.is_grad_enabled()


def test_modes_are_restored_when_the_model_raises() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("forward failed")

    model = Broken()
    model.inner.eval()
    with pytest.raises(ValueError, match="forward failed"):
        evaluate((torch.zeros(3, 1), torch.zeros(3)), metrics={"m": lambda p, t: 0.0})(
            {"model": model}
        )
    assert modes(model) == [True, False]


def test_evaluation_mode_runs_the_models_own_train_override() -> None:
    calls: list[bool] = []

    class Tracks(nn.Linear):
        def train(self, mode: bool = True) -> Tracks:
            calls.append(mode)
            return super().train(mode)

    model = Tracks(1, 1)
    with evaluation_mode(model):
        assert not model.training
    assert model.training
    assert calls == [False, True]


# --- evaluate --------------------------------------------------------------------------------


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(dim=1) == labels).float().mean()


@pytest.mark.parametrize("batch_size", [None, 1, 16, 99, 100, 500])
def test_evaluate_chunked_equals_one_pass(batch_size: int | None) -> None:
    X, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
    model = nn.Linear(5, 3)
    metrics = {"acc": accuracy, "ce": nn.CrossEntropyLoss(), "const": lambda p, t: 2}
    added = evaluate((X, y), metrics=metrics, batch_size=batch_size)({"model": model})
    with torch.no_grad():
        pred = model(X)
    assert list(added) == ["acc", "ce", "const"]
    assert all(type(v) is float for v in added.values())
    assert added["acc"] == pytest.approx(accuracy(pred, y).item(), rel=1e-6)
    assert added["ce"] == pytest.approx(nn.functional.cross_entropy(pred, y).item(), rel=1e-6)
    assert added["const"] == 2.0


def test_evaluate_last_label_false() -> None:
    X = torch.randn(12, 2)
    model = nn.Linear(2, 1)
    added = evaluate((X,), metrics={"mean": lambda p: p.mean()}, last_label=False, batch_size=5)(
        {"model": model}
    )
    with torch.no_grad():
        assert added["mean"] == pytest.approx(model(X).mean().item(), rel=1e-6)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every Tensor method that reads a value back to the host."""
    reads: list[str] = []
    for method in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counting(self: torch.Tensor, *a: Any, _m: str = method, _o: Any = original) -> Any:
            reads.append(_m)
            return _o(self, *a)

        monkeypatch.setattr(torch.Tensor, method, counting)
    return reads


def test_evaluate_reads_values_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
    model = nn.Linear(5, 3)
    augmenter = evaluate(
        (X, y), metrics={"acc": accuracy, "ce": nn.CrossEntropyLoss()}, batch_size=10
    )
    reads = count_reads(monkeypatch)
    added = augmenter({"model": model})
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert set(added) == {"acc", "ce"}


@pytest.mark.parametrize("batch_size", [None, 8])
def test_validation_loss_reads_back_once_per_evaluation(
    monkeypatch: pytest.MonkeyPatch, data: Any, model: nn.Module, batch_size: Any
) -> None:
    X, y = data
    augmenter = validation_loss((X, y), nn.MSELoss(), batch_size=batch_size)
    reads = count_reads(monkeypatch)
    first = augmenter({"model": model})
    second = augmenter({"model": model})
    monkeypatch.undo()
    assert len(reads) == 2
    assert first == second


# --- errors at the call ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("val_data", "error", "match"),
    [
        ((), ValueError, "validation_loss: 'val_data' must hold at least one tensor"),
        (torch.zeros(3, 2), TypeError, "'val_data' must be a tuple or list of tensors"),
        ((torch.zeros(3, 2), [1, 2, 3]), TypeError, r"'val_data\[1\]' must be a torch.Tensor"),
        ((torch.zeros(3, 2), torch.zeros(4)), ValueError, r"same first dimension.*\[3, 4\]"),
        ((torch.zeros(3, 2),), ValueError, "last_label=True needs at least two tensors"),
        ((torch.zeros(0, 2), torch.zeros(0)), ValueError, "holds no samples"),
    ],
)
def test_validation_loss_refuses_bad_data(val_data: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        validation_loss(val_data, nn.MSELoss())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "'batch_size' must be a positive int, got 0"),
        ({"batch_size": -3}, ValueError, "'batch_size' must be a positive int, got -3"),
        ({"batch_size": 2.0}, TypeError, "'batch_size' must be a positive int, got float"),
        ({"batch_size": True}, TypeError, "'batch_size' must be a positive int, got bool"),
        (
            {"key": ""},
            ValueError,
            "'key' must be a non-empty string such as 'val_loss', got str: ''",
        ),
        ({"key": 3}, TypeError, "'key' must be a non-empty string such as 'val_loss', got int: 3"),
    ],
)
def test_validation_loss_refuses_bad_options(kwargs: Any, error: type, match: str) -> None:
    data = (torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(error, match=f"validation_loss: {match}"):
        validation_loss(data, nn.MSELoss(), **kwargs)


def test_validation_loss_refuses_a_loss_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="validation_loss: 'loss_fn' must be callable, got str"):
        validation_loss((torch.zeros(3, 2), torch.zeros(3)), "mse")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ([accuracy], TypeError, "'metrics' must be a mapping of names to metrics.*got list"),
        ({}, ValueError, "'metrics' must hold at least one metric"),
        ({"": accuracy}, ValueError, "each name in 'metrics' must be a non-empty string"),
        (
            {1: accuracy},
            TypeError,
            "each name in 'metrics' must be a non-empty string .*, got int: 1",
        ),
        ({"acc": 0.5}, TypeError, r"'metrics\['acc'\]' must be a metric .*got float: 0.5"),
        (
            {"ce": torch.nn.CrossEntropyLoss},
            TypeError,
            r"'metrics\['ce'\]' is the class CrossEntropyLoss, not a metric: pass an instance",
        ),
    ],
)
def test_evaluate_refuses_bad_metrics(metrics: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=f"evaluate: {match}"):
        evaluate((torch.zeros(3, 2), torch.zeros(3)), metrics=metrics)


def test_evaluate_refuses_bad_data_and_batch_size() -> None:
    with pytest.raises(ValueError, match="evaluate: 'val_data' must hold at least one tensor"):
        evaluate((), metrics={"acc": accuracy})
    with pytest.raises(ValueError, match="evaluate: 'batch_size' must be a positive int"):
        evaluate((torch.zeros(3, 2), torch.zeros(3)), metrics={"acc": accuracy}, batch_size=0)


# --- errors at event time --------------------------------------------------------------------


def test_event_without_model_lists_its_keys(data: Any) -> None:
    augmenter = validation_loss(data, nn.MSELoss())
    with pytest.raises(
        KeyError, match=r"the event has no key 'model'; its keys are 'step', 'train_loss'"
    ):
        augmenter({"step": 1, "train_loss": 0.5})


def test_event_model_must_be_a_module(data: Any) -> None:
    with pytest.raises(TypeError, match=r"evaluate: event\['model'\] must be a torch.nn.Module"):
        evaluate(data, metrics={"m": accuracy})({"model": "not a model"})


def test_data_on_another_device_than_the_model(data: Any) -> None:
    model = nn.Linear(4, 1).to("meta")
    with pytest.raises(
        ValueError, match=r"'val_data\[0\]' is on device cpu but the model is on meta"
    ):
        validation_loss(data, nn.MSELoss())({"model": model})


def test_metric_giving_a_vector_is_refused_with_its_name(data: Any, model: nn.Module) -> None:
    augmenter = evaluate(data, metrics={"per_sample": lambda p, t: (p - t).abs()})
    with pytest.raises(
        TypeError, match=r"metric 'per_sample' must give a number.*shape \(103, 1\)"
    ):
        augmenter({"model": model})


def test_metric_giving_a_string_is_refused(data: Any, model: nn.Module) -> None:
    augmenter = validation_loss(data, lambda p, t: "low")
    with pytest.raises(TypeError, match="'loss_fn' must give a number or a 0-d tensor, got str"):
        augmenter({"model": model})


def test_model_without_parameters_is_evaluated() -> None:
    X, y = torch.randn(50, 3), torch.randn(50, 3)
    added = validation_loss((X, y), nn.MSELoss(), batch_size=20)({"model": nn.Identity()})
    assert added["val_loss"] == pytest.approx(nn.functional.mse_loss(X, y).item(), rel=1e-6)


def test_augmenter_is_reusable_across_events_of_a_training_run(data: Any) -> None:
    X, y = data
    model = nn.Linear(4, 1)
    augmenter = validation_loss((X, y), nn.MSELoss(), batch_size=16)

    def events() -> Iterator[dict[str, Any]]:
        for step in range(1, 4):
            model.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for p in model.parameters():
                    p.sub_(0.1 * p.grad)  # type: ignore[operator]
            yield {"step": step, "model": model}

    losses = [augmenter(ev)["val_loss"] for ev in events()]
    assert losses == sorted(losses, reverse=True)  # training on the same data lowers it
    assert losses[-1] == pytest.approx(one_pass_mse(model, X, y), rel=1e-6)


# --- in a pipeline ---------------------------------------------------------------------------


def test_augmenters_compose_with_augment_and_early_stop(data: Any) -> None:
    from fitstream import augment, early_stop, pipe

    X, y = data
    model = nn.Linear(4, 1)
    pulled: list[int] = []

    def training() -> Iterator[dict[str, Any]]:
        for step in range(1, 100):
            pulled.append(step)
            with torch.no_grad():
                model.weight.fill_(0.0 if step <= 2 else 1.0)  # best at step 1, then worse
            yield {"step": step, "model": model}

    events = pipe(
        training(),
        augment(validation_loss((X, y), nn.MSELoss(), batch_size=50)),
        augment(evaluate((X, y), metrics={"val_mae": nn.L1Loss()})),
        early_stop(key="val_loss", patience=2),
    )
    history = [(ev["step"], ev["val_loss"], ev["val_mae"]) for ev in events]
    assert [step for step, _, _ in history] == [1, 2, 3]
    assert pulled == [1, 2, 3]  # the augmenters pull nothing themselves
    assert history[0][1] == history[1][1] < history[2][1]
