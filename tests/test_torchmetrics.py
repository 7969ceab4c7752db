"""evaluate with torchmetrics objects and other stateful (update/compute/reset) metrics."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import evaluate

torchmetrics = pytest.importorskip("torchmetrics")
from torchmetrics import MeanSquaredError, MetricCollection  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score  # noqa: E402
from torchmetrics.functional import mean_squared_error  # noqa: E402
from torchmetrics.functional.classification import (  # noqa: E402
    multiclass_accuracy,
    multiclass_f1_score,
)

N_CLASSES = 4


@pytest.fixture
def classification() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    X, y = torch.randn(150, 6), torch.randint(0, N_CLASSES, (150,))
    return X, y, nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, N_CLASSES))


def predictions(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(X)
    return out


def nudge(model: nn.Module) -> None:
    """Change the weights, as an epoch of training would."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))


@pytest.mark.parametrize("batch_size", [None, 7, 64, 149, 150])
def test_metric_equals_one_full_set_computation(classification: Any, batch_size: Any) -> None:
    X, y, model = classification
    accuracy = MulticlassAccuracy(N_CLASSES, average="micro")
    added = evaluate((X, y), metrics={"val_acc": accuracy}, batch_size=batch_size)({"model": model})
    expected = multiclass_accuracy(predictions(model, X), y, N_CLASSES, average="micro")
    assert list(added) == ["val_acc"]
    assert type(added["val_acc"]) is float
    assert added["val_acc"] == pytest.approx(expected.item(), abs=1e-7)


@pytest.mark.parametrize("batch_size", [None, 11, 1000])
def test_regression_metric_equals_one_full_set_computation(batch_size: Any) -> None:
    X, y = torch.randn(97, 3), torch.randn(97, 1)
    model = nn.Linear(3, 1)
    added = evaluate((X, y), metrics={"val_mse": MeanSquaredError()}, batch_size=batch_size)(
        {"model": model}
    )
    expected = mean_squared_error(predictions(model, X), y)
    assert added["val_mse"] == pytest.approx(expected.item(), rel=1e-6)


def test_metric_is_reset_between_events(classification: Any) -> None:
    X, y, model = classification
    f1 = MulticlassF1Score(N_CLASSES, average="macro")
    augmenter = evaluate((X, y), metrics={"f1": f1}, batch_size=40)
    seen = []
    for _ in range(3):
        value = augmenter({"model": model})["f1"]
        expected = multiclass_f1_score(predictions(model, X), y, N_CLASSES, average="macro")
        assert value == pytest.approx(expected.item(), abs=1e-6)
        seen.append(value)
        nudge(model)
    assert len(set(seen)) == 3  # the model changed, and no event's value leaked into the next


def test_metric_state_used_elsewhere_does_not_pollute_the_evaluation(
    classification: Any,
) -> None:
    X, y, model = classification
    accuracy = MulticlassAccuracy(N_CLASSES, average="micro")
    accuracy.update(torch.randn(500, N_CLASSES), torch.randint(0, N_CLASSES, (500,)))
    added = evaluate((X, y), metrics={"acc": accuracy})({"model": model})
    expected = multiclass_accuracy(predictions(model, X), y, N_CLASSES, average="micro")
    assert added["acc"] == pytest.approx(expected.item(), abs=1e-7)


def test_collection_without_own_names_gets_the_key_as_prefix(classification: Any) -> None:
    X, y, model = classification
    collection = MetricCollection(
        {
            "acc": MulticlassAccuracy(N_CLASSES, average="micro"),
            "f1": MulticlassF1Score(N_CLASSES, average="macro"),
        }
    )
    augmenter = evaluate((X, y), metrics={"val": collection, "n": lambda p, t: 1}, batch_size=32)
    for _ in range(2):
        added = augmenter({"model": model})
        pred = predictions(model, X)
        assert list(added) == ["val_acc", "val_f1", "n"]
        assert added["val_acc"] == pytest.approx(
            multiclass_accuracy(pred, y, N_CLASSES, average="micro").item(), abs=1e-7
        )
        assert added["val_f1"] == pytest.approx(
            multiclass_f1_score(pred, y, N_CLASSES, average="macro").item(), abs=1e-6
        )
        nudge(model)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"prefix": "valid/"}, ["valid/MulticlassAccuracy"]),
        ({"postfix": "_val"}, ["MulticlassAccuracy_val"]),
        ({"prefix": ""}, ["MulticlassAccuracy"]),
    ],
)
def test_collection_that_names_itself_keeps_its_names(
    classification: Any, options: Any, names: list[str]
) -> None:
    X, y, model = classification
    collection = MetricCollection([MulticlassAccuracy(N_CLASSES, average="micro")], **options)
    added = evaluate((X, y), metrics={"ignored": collection})({"model": model})
    assert list(added) == names
    expected = multiclass_accuracy(predictions(model, X), y, N_CLASSES, average="micro")
    assert added[names[0]] == pytest.approx(expected.item(), abs=1e-7)


def test_two_metrics_giving_one_key_are_refused(classification: Any) -> None:
    X, y, model = classification
    collection = MetricCollection({"acc": MulticlassAccuracy(N_CLASSES)})
    augmenter = evaluate((X, y), metrics={"val": collection, "val_acc": lambda p, t: 0.0})
    with pytest.raises(ValueError, match="metric 'val_acc' gives the key 'val_acc', which"):
        augmenter({"model": model})


def test_metric_computing_a_vector_is_refused(classification: Any) -> None:
    X, y, model = classification
    per_class = MulticlassAccuracy(N_CLASSES, average=None)
    with pytest.raises(TypeError, match=r"metric 'acc' must give a number.*shape \(4,\)"):
        evaluate((X, y), metrics={"acc": per_class})({"model": model})


def test_metric_follows_the_model_device(classification: Any) -> None:
    X, y, model = classification
    accuracy = MulticlassAccuracy(N_CLASSES)
    evaluate((X, y), metrics={"acc": accuracy})({"model": model})
    assert accuracy.device == next(model.parameters()).device


class RecordingMean(nn.Module):
    """A stateful metric without torchmetrics: mean of ``pred`` over everything it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.moves: list[Any] = []
        self.reset()

    def to(self, *args: Any, **kwargs: Any) -> RecordingMean:
        self.moves.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)

    def reset(self) -> None:
        self.total, self.count = torch.tensor(0.0), 0
        if hasattr(self, "calls"):
            self.calls.append("reset")

    def update(self, pred: torch.Tensor, *labels: torch.Tensor) -> None:
        self.calls.append(f"update:{pred.shape[0]}:{len(labels)}")
        self.total = self.total + pred.sum()
        self.count += pred.numel()

    def compute(self) -> torch.Tensor:
        self.calls.append("compute")
        return self.total / self.count


def test_protocol_metric_is_moved_reset_updated_by_chunk_and_computed() -> None:
    X, y = torch.randn(25, 2), torch.randn(25, 1)
    model = nn.Linear(2, 1)
    metric = RecordingMean()
    metric.calls.clear()
    augmenter = evaluate((X, y), metrics={"mean": metric}, batch_size=10)
    added = augmenter({"model": model})
    assert metric.calls == ["reset", "update:10:1", "update:10:1", "update:5:1", "compute"]
    assert metric.moves == [torch.device("cpu")]
    assert added["mean"] == pytest.approx(predictions(model, X).mean().item(), abs=1e-6)


def test_protocol_metric_with_last_label_false_gets_predictions_only() -> None:
    X = torch.randn(8, 2)
    metric = RecordingMean()
    metric.calls.clear()
    evaluate((X,), metrics={"mean": metric}, last_label=False)({"model": nn.Linear(2, 1)})
    assert metric.calls == ["reset", "update:8:0", "compute"]


def test_metric_that_raises_restores_modes_and_names_the_metric(classification: Any) -> None:
    X, y, model = classification
    model[0].eval()
    before = [m.training for m in model.modules()]

    class Broken(RecordingMean):
        def update(self, pred: torch.Tensor, *labels: torch.Tensor) -> None:
            raise RuntimeError("update failed")

    with pytest.raises(RuntimeError, match="update failed") as info:
        evaluate((X, y), metrics={"broken": Broken()}, batch_size=50)({"model": model})
    assert [m.training for m in model.modules()] == before
    if sys.version_info >= (3, 11):
        assert any("metric 'broken'" in note for note in info.value.__notes__)


def test_plain_metrics_work_without_torchmetrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without torchmetrics installed `import torchmetrics` fails; evaluate must not need it.
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    X, y = torch.randn(10, 2), torch.randn(10, 1)
    model = nn.Linear(2, 1)
    added = evaluate((X, y), metrics={"mse": nn.MSELoss(), "mean": RecordingMean()})(
        {"model": model}
    )
    assert set(added) == {"mse", "mean"}


def test_train_metrics_take_torchmetrics_objects_on_both_sources() -> None:
    from itertools import islice

    from fitstream import ensemble_stream, epoch_stream

    torch.manual_seed(2)
    X, y = torch.randn(90, 6), torch.randint(0, N_CLASSES, (90,))

    def member(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, N_CLASSES))
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    def metrics() -> dict[str, Any]:
        return {
            "acc": MulticlassAccuracy(num_classes=N_CLASSES, average="micro"),
            "f1": multiclass_f1_score_callable,
        }

    def multiclass_f1_score_callable(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return multiclass_f1_score(pred, labels, num_classes=N_CLASSES, average="micro")

    pairs = [member(k) for k in range(2)]
    events = ensemble_stream(
        (X, y), [m for m, _ in pairs], [o for _, o in pairs], nn.CrossEntropyLoss(),
        batch_size=30, shuffle=False, train_metrics=metrics(),
    )  # fmt: skip
    together = list(islice(events, 2))
    for k in range(2):
        model, opt = member(k)
        alone = epoch_stream(
            (X, y), model, opt, nn.CrossEntropyLoss(), batch_size=30, shuffle=False,
            train_metrics=metrics(),
        )  # fmt: skip
        for mine, lone in zip(together, islice(alone, 2), strict=True):
            assert mine["train_acc"][k] == pytest.approx(lone["train_acc"], abs=1e-6)
            assert mine["train_f1"][k] == pytest.approx(lone["train_f1"], abs=1e-6)
            assert 0.0 <= lone["train_acc"] <= 1.0
