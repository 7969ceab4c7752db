"""epoch_stream and ensemble_stream(cuda_graphs=True) on a real GPU: numbers, lockstep, refusals.

Skipped without CUDA. Run on a GPU machine with ``uv run pytest -q -m gpu``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import best_model, ensemble_stream, epoch_stream

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="cuda_graphs=True needs CUDA"),
]

RTOL = 1e-4

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.05),
}


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    X = torch.randn(n, 8, generator=g)
    y = X[:, :1] * 0.5 - X[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g)
    return X.cuda(), y.cuda()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)).cuda()


def _stream(
    model: nn.Module, opt: torch.optim.Optimizer, *, graphs: bool, n: int = 1000, **kw: Any
) -> Iterator[dict[str, Any]]:
    kw.setdefault("batch_size", 64)
    kw.setdefault("generator", torch.Generator(device="cuda").manual_seed(7))
    return epoch_stream(_data(n), model, opt, nn.MSELoss(), cuda_graphs=graphs, **kw)


def _close(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n", [1000, 1024])  # a short last batch of 40 rows, and none
def test_same_losses_and_weights_as_the_eager_loop(kind: str, shuffle: bool, n: int) -> None:
    results = []
    models = []
    for graphs in (False, True):
        model = _model()
        opt = OPTIMIZERS[kind](model.parameters())
        stream = _stream(model, opt, graphs=graphs, n=n, shuffle=shuffle)
        results.append([ev["train_loss"] for ev in islice(stream, 5)])
        models.append(model)
    assert results[1] == pytest.approx(results[0], rel=RTOL)
    _close(*models)


def test_adam_is_switched_to_capturable_and_the_switch_is_exact_enough() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    next(_stream(model, opt, graphs=True))
    assert opt.param_groups[0]["capturable"] is True
    assert all(s["step"].device.type == "cuda" for s in opt.state.values())


CHANGES: dict[str, Callable[[nn.Module, torch.optim.Optimizer, dict[str, Any]], None]] = {
    "lr": lambda m, o, saved: o.param_groups[0].__setitem__("lr", 1e-2),
    "weight decay": lambda m, o, saved: o.param_groups[0].__setitem__("weight_decay", 0.5),
    "betas": lambda m, o, saved: o.param_groups[0].__setitem__("betas", (0.5, 0.9)),
    "optimizer load_state_dict": lambda m, o, saved: o.load_state_dict(saved["opt"]),
    "model load_state_dict": lambda m, o, saved: m.load_state_dict(saved["model"]),
    "best model load_into": lambda m, o, saved: saved["best"].load_into(m),
    "parameter replaced": lambda m, o, saved: setattr(
        m[2], "weight", nn.Parameter(torch.full((1, 32), 0.01, device="cuda"))
    ),
}


def _consumer(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    change: Callable[[nn.Module, torch.optim.Optimizer, dict[str, Any]], None],
) -> Callable[[dict[str, Any]], None]:
    saved: dict[str, Any] = {"best": best_model("train_loss", mode="max")}

    def between(event: dict[str, Any]) -> None:
        saved["best"](event)
        if event["step"] == 1:
            saved["opt"] = copy.deepcopy(opt.state_dict())
            saved["model"] = copy.deepcopy(model.state_dict())
        if event["step"] == 2:
            change(model, opt, saved)

    return between


@pytest.mark.parametrize("kind", ["adamw", "sgd-momentum"])
@pytest.mark.parametrize("name", list(CHANGES))
def test_changes_made_while_holding_an_event_take_effect_next_epoch(kind: str, name: str) -> None:
    if name == "betas" and kind.startswith("sgd"):
        pytest.skip("SGD has no betas")
    runs = []
    models = []
    for graphs in (False, True):
        model = _model()
        opt = OPTIMIZERS[kind](model.parameters())
        between = _consumer(model, opt, CHANGES[name])
        losses = []
        for event in islice(_stream(model, opt, graphs=graphs), 5):
            losses.append(event["train_loss"])
            between(event)
        runs.append(losses)
        models.append(model)
    assert runs[1] == pytest.approx(runs[0], rel=RTOL)
    _close(*models)


def _syncing_model() -> nn.Module:
    class Syncing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.linear(x)
            if out.mean().item() > 1e9:  # a host sync: fine eagerly, not in a graph
                out = out * 0
            return out

    torch.manual_seed(0)
    return Syncing().cuda()


def _masked_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    err = pred - target
    return err[err > 0].square().sum() / err.numel()  # the mask's size depends on the data


@pytest.mark.parametrize("case", ["item in forward", "data-dependent shape in loss"])
def test_a_step_that_cannot_be_captured_is_refused_at_the_first_next(case: str) -> None:
    if case == "item in forward":
        model, loss_fn = _syncing_model(), nn.MSELoss()
    else:
        model, loss_fn = _model(), _masked_loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = copy.deepcopy(model.state_dict())
    stream = epoch_stream(_data(256), model, opt, loss_fn, batch_size=32, cuda_graphs=True)
    with pytest.raises(
        RuntimeError,
        match=r"cuda_graphs=True cannot capture the training step: "
        r"it makes the host wait for the GPU.*cuda_graphs=False",
    ):
        next(stream)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert len(opt.state) == 0
    assert opt.param_groups[0]["capturable"] is False
    with pytest.raises(StopIteration):
        next(stream)
    # the same model and optimizer still train eagerly
    event = next(epoch_stream(_data(256), model, opt, loss_fn, batch_size=32))
    assert event["train_loss"] == event["train_loss"]  # not NaN


def test_optimizer_state_held_in_python_numbers_is_refused() -> None:
    class Counting(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    state["count"] = state.get("count", 0) + 1
            return super().step(closure)

    model = _model()
    opt = Counting(model.parameters(), lr=0.1)
    stream = epoch_stream(_data(256), model, opt, nn.MSELoss(), batch_size=32, cuda_graphs=True)
    with pytest.raises(RuntimeError, match=r"state 'count' as a Python int"):
        next(stream)


def test_call_refusals_name_cuda_graphs() -> None:
    cpu_model = _model().cpu()
    opt = torch.optim.SGD(cpu_model.parameters(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"cuda_graphs=True needs every parameter and buffer .*"
        r"'0.weight' is on cpu",
    ):
        epoch_stream(_data(64), cpu_model, opt, nn.MSELoss(), cuda_graphs=True)

    model = _model()
    model.register_buffer("scale", torch.ones(1))  # left on the CPU
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"cuda_graphs=True needs every parameter and buffer .*"
        r"'scale' is on cpu",
    ):
        epoch_stream(_data(64), model, opt, nn.MSELoss(), cuda_graphs=True)

    class Plain:
        def __init__(self, optimizer: torch.optim.Optimizer) -> None:
            self.inner = optimizer

        def step(self) -> None:
            self.inner.step()

        def zero_grad(self) -> None:
            self.inner.zero_grad()

    model = _model()
    plain = Plain(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"cuda_graphs=True needs a torch.optim.Optimizer"):
        epoch_stream(_data(64), model, plain, nn.MSELoss(), cuda_graphs=True)  # type: ignore[arg-type]


def _syncs_in_second_epoch(graphs: bool) -> int:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = _stream(model, opt, graphs=graphs)
    next(stream)  # the first epoch captures
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            next(stream)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing" in str(w.message) for w in caught)


def test_host_syncs_per_epoch_are_those_of_the_eager_loop() -> None:
    # The eager loop reads the epoch's loss once (.item()); replaying adds no other sync.
    assert _syncs_in_second_epoch(graphs=True) == _syncs_in_second_epoch(graphs=False)


def test_dropout_trains_with_fresh_masks_per_replay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 1)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = [ev["train_loss"] for ev in islice(_stream(model, opt, graphs=True), 5)]
    assert losses[-1] < losses[0]
    assert len(set(losses)) == 5


# --- ensemble_stream(cuda_graphs=True) ------------------------------------------------------

K = 4
MEMBER_OPTIMIZERS: dict[str, Callable[[int, Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda k, ps: torch.optim.SGD(
        ps, lr=[0.01, 0.02, 0.05, 0.1][k], momentum=[0.0, 0.5, 0.9, 0.9][k], weight_decay=1e-3
    ),
    "adam": lambda k, ps: torch.optim.Adam(ps, lr=[1e-4, 1e-3, 3e-3, 1e-2][k]),
    "adamw": lambda k, ps: torch.optim.AdamW(
        ps, lr=1e-3, weight_decay=[0.0, 0.01, 0.05, 0.1][k], amsgrad=k % 2 == 1
    ),
}


def _members(kind: str) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)).cuda())
    return models, [MEMBER_OPTIMIZERS[kind](k, m.parameters()) for k, m in enumerate(models)]


def _ensemble(
    models: list[nn.Module],
    opts: list[torch.optim.Optimizer],
    *,
    graphs: bool,
    n: int = 1000,
    loss_fn: Any = None,
    **kw: Any,
) -> Iterator[dict[str, Any]]:
    kw.setdefault("batch_size", 64)
    kw.setdefault("generator", torch.Generator(device="cuda").manual_seed(7))
    loss = nn.MSELoss() if loss_fn is None else loss_fn
    return ensemble_stream(_data(n), models, opts, loss, cuda_graphs=graphs, **kw)


def _close_members(a: list[nn.Module], b: list[nn.Module]) -> None:
    for x, y in zip(a, b, strict=True):
        _close(x, y)


def _approx_members(got: list[list[float]], expected: list[list[float]]) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=RTOL)


@pytest.mark.parametrize("kind", list(MEMBER_OPTIMIZERS))
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n", [1000, 1024])
def test_ensemble_same_losses_and_weights_per_member(kind: str, shuffle: bool, n: int) -> None:
    runs, members = [], []
    for graphs in (False, True):
        models, opts = _members(kind)
        stream = _ensemble(models, opts, graphs=graphs, n=n, shuffle=shuffle)
        runs.append([ev["train_loss"] for ev in islice(stream, 5)])
        members.append(models)
    _approx_members(runs[1], runs[0])
    _close_members(*members)


def test_ensemble_per_member_data_orders() -> None:
    runs, members = [], []
    for graphs in (False, True):
        models, opts = _members("adam")
        gens = [torch.Generator(device="cuda").manual_seed(s) for s in range(K)]
        stream = _ensemble(models, opts, graphs=graphs, generator=gens)
        runs.append([ev["train_loss"] for ev in islice(stream, 3)])
        members.append(models)
    _approx_members(runs[1], runs[0])
    _close_members(*members)


ENSEMBLE_CHANGES: dict[str, Callable[[dict[str, Any], list[nn.Module], list[Any], Any], None]] = {
    "lr": lambda ev, models, opts, saved: opts[1].param_groups[0].__setitem__("lr", 1e-2),
    "betas": lambda ev, models, opts, saved: (
        opts[0].param_groups[0].__setitem__("betas", (0.5, 0.9))
    ),
    "weight decay switched on": lambda ev, models, opts, saved: (
        opts[0].param_groups[0].__setitem__("weight_decay", 0.5)
    ),
    "freeze": lambda ev, models, opts, saved: ev["model"].freeze(2),
    "member load_state_dict": lambda ev, models, opts, saved: models[0].load_state_dict(saved),
}


@pytest.mark.parametrize("name", list(ENSEMBLE_CHANGES))
def test_ensemble_changes_take_effect_next_epoch(name: str) -> None:
    runs, members = [], []
    for graphs in (False, True):
        models, opts = _members("adam")
        saved: Any = None
        losses = []
        for event in islice(_ensemble(models, opts, graphs=graphs), 5):
            losses.append(event["train_loss"])
            if event["step"] == 1:
                saved = copy.deepcopy(models[3].state_dict())
            if event["step"] == 2:
                ENSEMBLE_CHANGES[name](event, models, opts, saved)
        runs.append(losses)
        members.append(models)
    _approx_members(runs[1], runs[0])
    _close_members(*members)


def test_ensemble_step_that_cannot_be_captured_is_refused_at_the_first_next() -> None:
    def syncing(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.cpu().cuda() - target).square().mean()  # a device-to-host copy: a sync

    models, opts = _members("adam")
    before = [copy.deepcopy(m.state_dict()) for m in models]
    stream = _ensemble(models, opts, graphs=True, n=256, loss_fn=syncing)
    with pytest.raises(RuntimeError, match=r"ensemble_stream: cuda_graphs=True cannot capture"):
        next(stream)
    for model, saved in zip(models, before, strict=True):
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key]), key
    with pytest.raises(StopIteration):
        next(stream)


def test_ensemble_call_refusals_name_cuda_graphs() -> None:
    models, _ = _members("adam")
    cpu = [m.cpu() for m in models]
    opts = [torch.optim.Adam(m.parameters()) for m in cpu]
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs every parameter and buffer"):
        ensemble_stream(_data(64), cpu, opts, nn.MSELoss(), cuda_graphs=True)
    models, _ = _members("adam")
    rms = [torch.optim.RMSprop(m.parameters()) for m in models]
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs the vectorised optimizer step"):
        ensemble_stream(_data(64), models, rms, nn.MSELoss(), cuda_graphs=True)


def _ensemble_syncs_in_second_epoch(graphs: bool) -> int:
    models, opts = _members("adam")
    stream = _ensemble(models, opts, graphs=graphs)
    next(stream)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            next(stream)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing" in str(w.message) for w in caught)


def test_ensemble_host_syncs_per_epoch_are_those_of_the_eager_loop() -> None:
    assert _ensemble_syncs_in_second_epoch(graphs=True) <= _ensemble_syncs_in_second_epoch(
        graphs=False
    )
