"""The stacked MLP's step with its gradients by hand (sources/ensemble/hand_step.py).

Each member's gradients equal those autograd gives the member alone; an ensemble trained by hand
trains as through autograd; and whatever the hand step does not take goes through autograd, with
the same results and the same errors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import Ensemble, ensemble_stream
from fitstream.sources.ensemble import hand_step as hand_module
from fitstream.sources.ensemble import loop as loop_module
from fitstream.sources.ensemble.hand_step import HandStep, hand_step

K, B, D, H, C = 3, 6, 5, 7, 4
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu-inplace": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "leaky": lambda: nn.LeakyReLU(0.2),
}
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross-entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
}


def _models(act: Callable[[], nn.Module], *, bias: bool = True, k: int = K) -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.Linear(D, H, bias=bias), act(), nn.Linear(H, H), act(), nn.Linear(H, C))
        for _ in range(k)
    ]


def _labels(loss: str, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if loss == "cross-entropy":
        return torch.randint(0, C, shape, generator=g)
    return torch.randn(*shape, C, generator=g)


def _grads_by_hand(models: list[nn.Module], loss_fn: nn.Module, x: Any, y: Any, each: bool) -> Any:
    ensemble = Ensemble(models)
    slabs = ensemble._trainable_slabs()
    grads = {n: g for slab in slabs for n, g in zip(slab.names, slab.grads, strict=True)}
    step = hand_step(ensemble, loss_fn, grads)
    assert isinstance(step, HandStep)
    assert step.fits(y)
    outputs, losses = step(x, y, each)
    return outputs, losses, {n: g.clone() for n, g in grads.items()}


@pytest.mark.parametrize("each", [False, True], ids=["shared-batch", "own-batches"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_each_members_gradients_by_hand_equal_autograds_for_it_alone(
    act: str, loss: str, each: bool
) -> None:
    models = _models(ACTIVATIONS[act])
    alone = [copy.deepcopy(m) for m in models]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(K, B, D, generator=g) if each else torch.randn(B, D, generator=g)
    y = _labels(loss, (K, B) if each else (B,))
    loss_fn = LOSSES[loss]()
    outputs, losses, grads = _grads_by_hand(models, loss_fn, x, y, each)
    for k, model in enumerate(alone):
        xk, yk = (x[k], y[k]) if each else (x, y)
        out = model(xk)
        value = loss_fn(out, yk)
        value.backward()
        torch.testing.assert_close(outputs[k], out.detach())
        torch.testing.assert_close(losses[k], value.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad, rtol=1e-5, atol=1e-7)


CHAINS: dict[str, Callable[[], list[nn.Module]]] = {
    "relu-sigmoid": lambda: [nn.ReLU(), nn.Sigmoid()],
    "tanh-tanh": lambda: [nn.Tanh(), nn.Tanh()],
    "relu-identity-tanh": lambda: [nn.ReLU(), nn.Identity(), nn.Tanh()],
    "gelu-relu-sigmoid": lambda: [nn.GELU(), nn.ReLU(), nn.Sigmoid()],
}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_activations_in_a_row_keep_each_ones_output_for_its_gradient(chain: str) -> None:
    """An activation computed in place on a product must not be overwritten by the next one:
    its gradient reads its output (ReLU, Tanh, Sigmoid)."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(D, H), *CHAINS[chain](), nn.Linear(H, C)) for _ in range(K)]
    alone = [copy.deepcopy(m) for m in models]
    x, y = torch.randn(K, B, D), _labels("mse", (K, B))
    outputs, _, grads = _grads_by_hand(models, nn.MSELoss(), x, y, True)
    for k, model in enumerate(alone):
        out = model(x[k])
        nn.MSELoss()(out, y[k]).backward()
        torch.testing.assert_close(outputs[k], out.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad, rtol=1e-5, atol=1e-7)


def test_a_layer_without_bias_and_an_activation_first_are_done_by_hand() -> None:
    models = [nn.Sequential(nn.Tanh(), nn.Linear(D, C, bias=False)) for _ in range(K)]
    alone = [copy.deepcopy(m) for m in models]
    x, y = torch.randn(K, B, D), _labels("cross-entropy", (K, B))
    _, _, grads = _grads_by_hand(models, nn.CrossEntropyLoss(), x, y, True)
    for k, model in enumerate(alone):
        nn.CrossEntropyLoss()(model(x[k]), y[k]).backward()
        torch.testing.assert_close(grads["1.weight"][k], model[1].weight.grad)


def test_no_hand_step_where_it_would_be_wrong() -> None:
    ensemble = Ensemble(_models(nn.ReLU))
    grads: dict[str, torch.Tensor] = {}
    assert hand_step(ensemble, nn.CrossEntropyLoss(label_smoothing=0.1), grads) is None
    assert hand_step(ensemble, nn.CrossEntropyLoss(weight=torch.ones(C)), grads) is None
    assert hand_step(ensemble, nn.MSELoss(reduction="sum"), grads) is None
    assert hand_step(ensemble, nn.HuberLoss(), grads) is None
    assert hand_step(ensemble, lambda out, y: out.sum(), grads) is None
    # the gradient reads the activation's input, which an in-place one overwrites
    assert hand_step(Ensemble(_models(lambda: nn.SiLU(inplace=True))), nn.MSELoss(), grads) is None
    assert hand_step(Ensemble(_models(nn.Softplus)), nn.MSELoss(), grads) is None
    assert hand_step(Ensemble([nn.Linear(D, C), nn.Linear(D, C)]), nn.MSELoss(), grads) is None


def test_the_labels_are_checked_once_per_version() -> None:
    ensemble = Ensemble(_models(nn.ReLU))
    step = hand_step(ensemble, nn.CrossEntropyLoss(), {})
    assert step is not None
    labels = torch.tensor([0, 3, 1])
    assert step.fits(labels)
    labels[1] = C  # out of range: autograd says so
    assert not step.fits(labels)
    assert not step.fits(torch.tensor([0, -100, 1]))  # ignored: autograd ignores it
    assert not step.fits(torch.tensor([0.0, 1.0]))
    ignoring_one = hand_step(ensemble, nn.CrossEntropyLoss(ignore_index=1), {})
    assert ignoring_one is not None
    assert not ignoring_one.fits(torch.tensor([0, 1, 2]))
    assert ignoring_one.fits(torch.tensor([0, 3, 2]))


# -- end to end: ensemble_stream --------------------------------------------------------------


class Counted:
    """Counts the batches the hand step took (``HandStep.__call__`` that returned a result)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        real = HandStep.__call__

        def counting(step: HandStep, *args: Any) -> Any:
            done = real(step, *args)
            self.taken += done is not None
            return done

        monkeypatch.setattr(HandStep, "__call__", counting)


def _classification(n: int = 45) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    X = torch.randn(n, D, generator=g)
    return X, (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()


def _train(
    data: tuple[torch.Tensor, ...], loss_fn: nn.Module, epochs: int = 3, **kwargs: Any
) -> tuple[list[list[float]], list[nn.Module]]:
    models = _models(nn.ReLU)
    opts = [torch.optim.Adam(m.parameters(), lr=0.01 * (k + 1)) for k, m in enumerate(models)]
    gen = torch.Generator().manual_seed(3)
    stream = ensemble_stream(data, models, opts, loss_fn, batch_size=8, generator=gen, **kwargs)
    return [event["train_loss"] for event in islice(stream, epochs)], models


@pytest.fixture
def through_autograd(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with monkeypatch.context() as patch:
            patch.setattr(loop_module, "hand_step", lambda *a: None)
            return _train(*args, **kwargs)

    return run


def _rows(n: int) -> list[torch.Tensor]:
    return [torch.arange(n)[k::2] for k in range(K)]


@pytest.mark.parametrize("rows", [False, True], ids=["shared-rows", "own-rows"])
@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_an_ensemble_trains_by_hand_as_it_does_through_autograd(
    monkeypatch: pytest.MonkeyPatch, through_autograd: Any, loss: str, rows: bool
) -> None:
    X, y = _classification()
    data = (X, y) if loss == "cross-entropy" else (X, torch.nn.functional.one_hot(y, C).float())
    loss_fn = LOSSES[loss]()
    extra = {"rows": _rows(len(X))} if rows else {}
    counted = Counted(monkeypatch)
    losses, models = _train(data, loss_fn, **extra)
    # every step of 3 epochs by hand: 6 batches of the 45 rows; or of 23, 22 and 22 rows, two
    # batches of 8 together, then the last ones of 7 rows and of 6 apart
    steps = 3 * (4 if rows else 6)
    assert counted.taken == steps
    expected, reference = through_autograd(data, loss_fn, **extra)
    assert counted.taken == steps  # none more
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-5, atol=0)
    for model, other in zip(models, reference, strict=True):
        for p, q in zip(model.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_labels_the_hand_step_does_not_take_go_through_autograd(
    monkeypatch: pytest.MonkeyPatch, through_autograd: Any
) -> None:
    X, y = _classification()
    counted = Counted(monkeypatch)
    ignored = y.clone()
    ignored[::4] = -100  # cross-entropy's ignore_index: left out of each mean
    losses, _ = _train((X, ignored), nn.CrossEntropyLoss())
    assert counted.taken == 0
    assert losses == through_autograd((X, ignored), nn.CrossEntropyLoss())[0]
    wrong = y.clone()
    wrong[7] = C
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
        _train((X, wrong), nn.CrossEntropyLoss())
    assert counted.taken == 0


def test_a_tensor_hook_on_a_stacked_parameter_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _classification()
    models = _models(nn.ReLU)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    counted = Counted(monkeypatch)
    events = iter(ensemble_stream((X, y), models, opts, nn.CrossEntropyLoss(), batch_size=8))
    first = next(events)
    assert counted.taken == 6  # by hand
    seen: list[torch.Size] = []
    first["model"].stacked[0].register_hook(lambda grad: seen.append(grad.shape))
    next(events)
    assert counted.taken == 6  # the hook's epoch: through autograd
    assert seen == [torch.Size([K, H, D])] * 6


def test_gradient_accumulation_goes_through_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _classification()
    counted = Counted(monkeypatch)
    _train((X, y), nn.CrossEntropyLoss(), epochs=1, accumulate=2)
    assert counted.taken == 0


def test_the_module_has_no_stray_names() -> None:
    assert hand_module.__all__ == ["HandStep", "hand_step"]
