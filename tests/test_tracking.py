"""best_model / BestModel: which event wins, snapshot independence, devices, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import BestModel, best_model


def set_weights(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def run(best: BestModel, model: nn.Module, values: list[Any], key: str = "val_loss") -> None:
    """Feed one event per value; before event i the weights are all equal to i."""
    for step, value in enumerate(values, start=1):
        set_weights(model, float(step))
        best({"step": step, "model": model, key: value, "train_loss": 1.0})


def weight_of(state: dict[str, Any]) -> float:
    return float(state["weight"].flatten()[0])


@pytest.mark.parametrize(
    ("direction", "values", "step", "value"),
    [
        ("min", [3.0, 2.0, 2.5, 1.0, 5.0], 4, 1.0),
        ("max", [0.1, 0.7, 0.3, 0.7, 0.2], 2, 0.7),  # equal is not better: step 2 stays
        ("min", [2.0, 2.0, 2.0], 1, 2.0),
        ("min", [float("nan"), 4.0, float("nan"), 3.0], 4, 3.0),
        ("max", [-math.inf, 1.0, math.inf, 5.0], 3, math.inf),
    ],
)
def test_tracks_the_strictly_best_event(
    direction: Any, values: list[float], step: int, value: float
) -> None:
    model = nn.Linear(2, 1)
    best = best_model("val_loss", mode=direction)
    run(best, model, values)
    assert best.best_step == step
    assert best.best_value == value
    assert best.state_dict is not None
    assert weight_of(best.state_dict) == float(step)


def test_nothing_before_the_first_number() -> None:
    best = best_model("val_loss")
    assert (best.best_value, best.best_step, best.state_dict) == (None, None, None)
    run(best, nn.Linear(1, 1), [float("nan"), float("nan")])
    assert (best.best_value, best.best_step, best.state_dict) == (None, None, None)
    with pytest.raises(RuntimeError, match=r"best_model: no snapshot to load yet.*'val_loss'"):
        best.load_into(nn.Linear(1, 1))


def test_accepts_tensors_and_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    model = nn.Linear(1, 1)
    best = best_model("acc", mode="max")
    run(best, model, [torch.tensor(0.5), np.float32(0.75), torch.tensor([0.6]).squeeze()], "acc")
    assert best.best_step == 2
    assert best.best_value == 0.75
    assert type(best.best_value) is float


def test_snapshot_is_independent_of_later_training() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    best = best_model("val_loss")
    best({"step": 1, "model": model, "val_loss": 0.1})
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):  # later epochs: parameters and BatchNorm buffers change in place
        model.zero_grad()
        nn.functional.mse_loss(model(X), y).backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():  # a plain SGD step (torch.optim's first step imports dynamo: slow)
            for p in model.parameters():
                p.sub_(0.5 * p.grad)  # type: ignore[operator]
        best({"step": 2, "model": model, "val_loss": 0.5})
    assert best.state_dict is not None
    assert not torch.equal(model.state_dict()["0.weight"], expected["0.weight"])
    assert not torch.equal(model.state_dict()["1.running_mean"], expected["1.running_mean"])
    assert best.state_dict.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(best.state_dict[name], tensor), name
        assert not best.state_dict[name].requires_grad
    fresh = best.load_into(model)
    assert fresh is model
    for name, tensor in expected.items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_snapshot_tensors_are_copies_not_views() -> None:
    model = nn.Linear(2, 2)
    best = best_model("val_loss")
    best({"model": model, "val_loss": 1.0})
    assert best.state_dict is not None
    live = model.state_dict()
    for name, tensor in best.state_dict.items():
        assert tensor.data_ptr() != live[name].data_ptr()
    assert best.best_step is None  # the event had no step


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_snapshot_is_moved_to_the_requested_device(device: Any) -> None:
    model = nn.Linear(2, 1)
    best = best_model("val_loss", device=device)
    best({"step": 1, "model": model, "val_loss": 0.3})
    assert best.state_dict is not None
    assert {t.device.type for t in best.state_dict.values()} == {"meta"}
    assert next(model.parameters()).device.type == "cpu"


def test_snapshot_stays_on_the_models_device_by_default() -> None:
    model = nn.Linear(2, 1).to("meta")
    best = best_model("val_loss")
    best({"step": 1, "model": model, "val_loss": 0.3})
    assert best.state_dict is not None
    assert {t.device.type for t in best.state_dict.values()} == {"meta"}


def test_snapshot_on_cpu_loads_into_the_model() -> None:
    model = nn.Linear(2, 1)
    best = best_model("val_loss", device="cpu")
    run(best, model, [1.0, 0.5, 0.8])
    best.load_into(model)
    assert model.weight.eq(2.0).all()


def test_best_model_only_looks_at_the_event() -> None:
    event = {"step": 1, "model": nn.Linear(1, 1), "val_loss": 0.3}
    before = dict(event)
    assert best_model("val_loss")(event) is None
    assert event == before


def test_repr_shows_the_state() -> None:
    best = best_model("val_acc", mode="max")
    run(best, nn.Linear(1, 1), [0.25], "val_acc")
    assert repr(best) == "BestModel('val_acc', mode='max', best_value=0.25, best_step=1)"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["up", "MIN", 1])
def test_bad_mode_is_refused_at_the_call(mode: Any) -> None:
    with pytest.raises(ValueError, match=f"'mode' must be 'min', 'max' or None, got {mode!r}"):
        best_model("val_loss", mode=mode)
    with pytest.raises(ValueError, match=f"'mode' must be 'min', 'max' or None, got {mode!r}"):
        BestModel("val_loss", mode)


def test_bad_metric_key_and_device_are_refused_at_the_call() -> None:
    with pytest.raises(TypeError, match="best_model: 'metric_key' must be a non-empty string"):
        best_model(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="best_model: 'metric_key' must be a non-empty string"):
        best_model("")
    with pytest.raises(ValueError, match=r"best_model: 'device' must be a torch\.device.*'gpu9'"):
        best_model("val_loss", device="gpu9")
    with pytest.raises(ValueError, match=r"best_model: 'device' must be a torch\.device.*float"):
        best_model("val_loss", device=1.5)  # type: ignore[arg-type]


def test_missing_metric_lists_the_event_keys() -> None:
    best = best_model("val_loss")
    with pytest.raises(
        KeyError, match=r"best_model: the event has no key 'val_loss'; its keys are 'step', 'train"
    ):
        best({"step": 1, "train_loss": 0.1, "model": nn.Linear(1, 1)})


@pytest.mark.parametrize("value", ["0.5", None, [0.5], torch.ones(2), True])
def test_non_numeric_metric_names_key_and_value(value: Any) -> None:
    best = best_model("val_loss")
    with pytest.raises(TypeError, match=r"best_model: the value of 'val_loss' must be a number"):
        best({"step": 1, "model": nn.Linear(1, 1), "val_loss": value})


def test_improving_event_without_model_lists_the_keys() -> None:
    best = best_model("val_loss")
    with pytest.raises(
        KeyError, match=r"best_model: the event has no key 'model'; its keys are 'step', 'val_loss'"
    ):
        best({"step": 1, "val_loss": 0.1})


def test_model_without_state_dict_is_refused() -> None:
    best = best_model("val_loss")
    with pytest.raises(TypeError, match=r"event\['model'\] must have a state_dict\(\).*str"):
        best({"step": 1, "val_loss": 0.1, "model": "resnet"})


def test_best_model_as_a_tap_in_a_pipeline() -> None:
    from fitstream import augment, pipe, tap, validation_loss

    X = torch.randn(40, 2)
    y = X @ torch.tensor([[1.0], [-2.0]])
    model = nn.Linear(2, 1, bias=False)
    targets = [[0.0, 0.0], [1.0, -2.0], [3.0, 3.0]]  # the second epoch fits exactly

    def training() -> Any:
        for step, w in enumerate(targets, start=1):
            with torch.no_grad():
                model.weight.copy_(torch.tensor([w]))
            yield {"step": step, "model": model}

    best = best_model("val_loss")
    events = pipe(training(), augment(validation_loss((X, y), nn.MSELoss())), tap(best))
    steps = [ev["step"] for ev in events]
    assert steps == [1, 2, 3]
    assert best.best_step == 2
    assert best.best_value == pytest.approx(0.0, abs=1e-10)
    best.load_into(model)
    assert model.weight.tolist() == [[1.0, -2.0]]
