"""epoch_stream(cuda_graphs=...): refusals at the call, and the capture logic run on the CPU.

A real CUDA graph needs a GPU (tests/test_cuda_graphs_gpu.py). Here a stand-in for the CUDA
calls (:class:`FakeCuda`) lets the whole graphed path run on the CPU: "capture" records the
step and "replay" runs it, writing fresh gradients as a graph does, and refusing to run if
anything the step depends on changed since capture (a real graph would silently replay stale
work). That checks the logic that must be right on any device: the eager first step, warm-up
and its undoing, one graph per batch size, recapture when the world changes, the loss sum,
and the clean-up after a failed capture.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import best_model, epoch_stream
from fitstream.sources import _shared
from fitstream.sources.graphed import steps as graphed
from fitstream.sources.graphed.step_state import world_key
from fitstream.sources.single import training as epochs

# --- refusals at the call -----------------------------------------------------------------


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(n, 3, generator=g)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_cuda_graphs_must_be_a_bool(bad: object) -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"epoch_stream: 'cuda_graphs' must be True or False"):
        epoch_stream(_data(), model, opt, nn.MSELoss(), cuda_graphs=bad)  # type: ignore[arg-type]


def test_cuda_graphs_with_cpu_data_is_refused_at_the_call() -> None:
    model = nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(
        ValueError, match=r"cuda_graphs=True needs the data and the model on a CUDA"
    ):
        epoch_stream(_data(), model, opt, nn.MSELoss(), cuda_graphs=True)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert "capturable" in opt.param_groups[0]
    assert opt.param_groups[0]["capturable"] is False


def test_cuda_graphs_is_checked_before_the_model_device() -> None:
    model = nn.Linear(3, 1, device="meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs .* got data on cpu"):
        epoch_stream(_data(), model, opt, nn.MSELoss(), cuda_graphs=True)


def test_cuda_graphs_false_is_the_default_eager_loop() -> None:
    results = []
    for flag in ({}, {"cuda_graphs": False}):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        stream = epoch_stream(
            _data(), model, opt, nn.MSELoss(), batch_size=8, generator=torch.Generator(), **flag
        )
        results.append([ev["train_loss"] for ev in islice(stream, 3)])
    assert results[0] == results[1]


# --- the graphed path on the CPU ----------------------------------------------------------


class FakeCuda:
    """Stands in for ``graphed.CudaGraphs``: capture records the step, replay runs it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.captures = 0
        self.replays = 0
        self.in_warm_up = False
        self.fail_capture: BaseException | None = None
        self.during_capture: Callable[[], None] | None = None

    def side_stream(self) -> str:
        return "side"

    @contextmanager
    def warm_up(self, stream: Any) -> Iterator[None]:
        assert stream == "side"
        self.in_warm_up = True
        try:
            yield
        finally:
            self.in_warm_up = False

    def capture(self, fn: Callable[[], None], stream: Any) -> Any:
        if self.fail_capture is not None:
            raise self.fail_capture
        self.captures += 1
        if self.during_capture is not None:
            self.during_capture()
        key = world_key(self.model, self.optimizer)

        def replay() -> None:
            assert world_key(self.model, self.optimizer) == key, "replayed a stale graph"
            self.optimizer.zero_grad(set_to_none=True)  # a graph writes fresh gradients
            fn()
            self.replays += 1

        return SimpleNamespace(replay=replay)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Make ``epoch_stream(..., cuda_graphs=True)`` run on the CPU with a FakeCuda."""
    made: list[FakeCuda] = []

    def start(model: nn.Module, opt: torch.optim.Optimizer, **kwargs: Any) -> Any:
        cuda = FakeCuda(model, opt)
        made.append(cuda)
        monkeypatch.setattr(epochs, "CudaGraphs", lambda device: cuda)
        data = kwargs.pop("data", None) or _data(kwargs.pop("n", 50))
        loss_fn = kwargs.pop("loss_fn", nn.MSELoss())
        stream = epoch_stream(data, model, opt, loss_fn, cuda_graphs=True, **kwargs)
        return stream, cuda

    monkeypatch.setattr(_shared, "check_cuda_graphs", lambda flag, *args, **kwargs: flag)
    # capturable=True optimizers refuse CPU parameters; the switch is tested on its own.
    monkeypatch.setattr(graphed, "make_capturable", lambda optimizer: [])
    return start


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd-dampening-nesterov": lambda ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01
    ),
    "sgd-dampening": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
}


def _pair(kind: str) -> list[tuple[nn.Module, torch.optim.Optimizer]]:
    pairs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
        pairs.append((model, OPTIMIZERS[kind](model.parameters())))
    return pairs


def _run(
    stream: Iterator[dict[str, Any]],
    epochs_: int,
    between: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[float]:
    losses = []
    for event in islice(stream, epochs_):
        losses.append(event["train_loss"])
        if between is not None:
            between(event["step"], event)
    return losses


def _same_model(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize(("shuffle", "n"), [(True, 50), (False, 50), (True, 48)])
def test_graphed_path_equals_the_eager_loop(
    fake: Callable[..., Any], kind: str, shuffle: bool, n: int
) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    eager = epoch_stream(
        _data(n),
        m_eager,
        o_eager,
        nn.MSELoss(),
        batch_size=8,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(5),
    )
    stream, cuda = fake(
        m_graph,
        o_graph,
        n=n,
        batch_size=8,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(5),
    )
    expected = _run(eager, 5)
    got = _run(stream, 5)
    assert got == pytest.approx(expected, rel=1e-6)
    assert _same_model(m_eager, m_graph)
    assert cuda.captures == (2 if n % 8 else 1)  # full batches, and a short last batch
    assert cuda.replays == 5 * -(-n // 8) - 1  # the first step of all is trained eagerly


@pytest.mark.parametrize(
    "options",
    [
        {"clip_grad_norm": 0.05},
        {"clip_grad_value": 0.01},
        {"autocast": torch.bfloat16},
        {"clip_grad_norm": 0.05, "autocast": torch.bfloat16},
    ],
    ids=["clip-norm", "clip-value", "bf16", "clip-norm+bf16"],
)
@pytest.mark.parametrize("kind", ["sgd-momentum", "adam"])
def test_the_captured_step_clips_and_autocasts_as_the_eager_one(
    fake: Callable[..., Any], kind: str, options: dict[str, Any]
) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    kwargs: dict[str, Any] = {"batch_size": 8, "shuffle": False, **options}
    eager = epoch_stream(_data(), m_eager, o_eager, nn.MSELoss(), **kwargs)
    stream, cuda = fake(m_graph, o_graph, **kwargs)
    assert _run(stream, 3) == pytest.approx(_run(eager, 3), rel=1e-6)
    assert _same_model(m_eager, m_graph)
    assert cuda.captures == 2  # the options went through the graph
    assert cuda.replays > 0
    (m_plain, o_plain), _ = _pair(kind)
    _run(epoch_stream(_data(), m_plain, o_plain, nn.MSELoss(), batch_size=8, shuffle=False), 3)
    assert not _same_model(m_plain, m_graph)  # the options did change the training


def test_graphed_path_without_labels_equals_the_eager_loop(fake: Callable[..., Any]) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair("adam")
    X, _ = _data()

    def loss_fn(pred: torch.Tensor) -> torch.Tensor:
        return (pred - 1.0).square().mean()

    kwargs = {"batch_size": 8, "last_label": False}
    eager = epoch_stream(
        (X,), m_eager, o_eager, loss_fn, generator=torch.Generator().manual_seed(2), **kwargs
    )
    stream, cuda = fake(
        m_graph,
        o_graph,
        data=(X,),
        loss_fn=loss_fn,
        generator=torch.Generator().manual_seed(2),
        **kwargs,
    )
    runs = [_run(eager, 3), _run(stream, 3)]
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)
    assert _same_model(m_eager, m_graph)
    assert cuda.replays > 0


def test_a_single_short_batch_is_trained_eagerly_then_replayed(fake: Callable[..., Any]) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair("adam")
    eager = epoch_stream(_data(5), m_eager, o_eager, nn.MSELoss(), batch_size=8, shuffle=False)
    stream, cuda = fake(m_graph, o_graph, n=5, batch_size=8, shuffle=False)
    assert _run(stream, 3) == pytest.approx(_run(eager, 3), rel=1e-6)
    assert _same_model(m_eager, m_graph)
    assert (cuda.captures, cuda.replays) == (1, 2)


CHANGES: dict[
    str, tuple[Callable[[nn.Module, torch.optim.Optimizer, dict[str, Any]], None], int]
] = {
    # name: (what the consumer does after event 2, how many times the steps are captured)
    "lr": (lambda m, o, saved: o.param_groups[0].__setitem__("lr", 0.001), 2),
    "weight decay": (lambda m, o, saved: o.param_groups[0].__setitem__("weight_decay", 0.5), 2),
    "optimizer load_state_dict": (lambda m, o, saved: o.load_state_dict(saved["opt"]), 2),
    "model load_state_dict": (lambda m, o, saved: m.load_state_dict(saved["model"]), 1),
    "best model load_into": (lambda m, o, saved: saved["best"].load_into(m), 1),
    "parameter replaced": (
        lambda m, o, saved: setattr(m[3], "weight", nn.Parameter(torch.full((1, 8), 0.1))),
        2,
    ),
}


def _consumer(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    change: Callable[[nn.Module, torch.optim.Optimizer, dict[str, Any]], None],
) -> Callable[[int, dict[str, Any]], None]:
    """What the consumer does while it holds each event: save at 1, change things at 2."""
    saved: dict[str, Any] = {"best": best_model("train_loss", mode="min")}

    def between(step: int, event: dict[str, Any]) -> None:
        saved["best"](event)
        if step == 1:
            saved["opt"] = copy.deepcopy(opt.state_dict())
            saved["model"] = copy.deepcopy(model.state_dict())
        if step == 2:
            change(model, opt, saved)

    return between


@pytest.mark.parametrize("name", list(CHANGES))
def test_what_the_consumer_changes_between_epochs_takes_effect_next_epoch(
    fake: Callable[..., Any], name: str
) -> None:
    change, captures = CHANGES[name]
    (m_eager, o_eager), (m_graph, o_graph) = _pair("adam")
    runs = []
    for model, opt, graph in ((m_eager, o_eager, False), (m_graph, o_graph, True)):
        between = _consumer(model, opt, change)
        kwargs = {"batch_size": 8, "generator": torch.Generator().manual_seed(1)}
        if graph:
            stream, cuda = fake(model, opt, **kwargs)
        else:
            stream = epoch_stream(_data(), model, opt, nn.MSELoss(), **kwargs)
        runs.append(_run(stream, 5, between))
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)
    assert runs[1][2] != pytest.approx(runs[1][1], rel=1e-3)  # the change did something
    assert _same_model(m_eager, m_graph)
    assert cuda.captures == 2 * captures  # a graph for the full batches, one for the last


def test_a_failed_capture_leaves_the_model_untouched_and_ends_the_stream(
    fake: Callable[..., Any],
) -> None:
    (model, opt), _ = _pair("sgd-momentum")
    before = copy.deepcopy(model.state_dict())
    stream, cuda = fake(model, opt, batch_size=8)
    cuda.fail_capture = RuntimeError("CUDA error: operation not permitted when stream is capturing")
    with pytest.raises(
        RuntimeError,
        match=r"epoch_stream: cuda_graphs=True cannot capture the "
        r"training step: .*operation not permitted when stream is capturing",
    ):
        next(stream)
    assert _same_model(model, _loaded(before))
    assert len(opt.state) == 0  # the eager first step was undone as well
    with pytest.raises(StopIteration):
        next(stream)


def _loaded(state: dict[str, torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    model.load_state_dict(state)
    return model


def test_a_host_sync_in_the_step_is_named_at_the_first_next(fake: Callable[..., Any]) -> None:
    (model, opt), _ = _pair("sgd-momentum")
    before = copy.deepcopy(model.state_dict())
    stream, cuda = fake(model, opt, batch_size=8)

    def syncing(module: nn.Module, inputs: Any) -> None:
        if cuda.in_warm_up:  # what torch.cuda.set_sync_debug_mode("error") raises on .item()
            raise RuntimeError("called a synchronizing CUDA operation")

    model.register_forward_pre_hook(syncing)
    with pytest.raises(
        RuntimeError,
        match=r"cannot capture the training step: it makes the host "
        r"wait for the GPU .*\.item\(\).*cuda_graphs=False",
    ):
        next(stream)
    assert _same_model(model, _loaded(before))
    assert len(opt.state) == 0


def test_a_failed_recapture_keeps_the_model_of_the_last_event(fake: Callable[..., Any]) -> None:
    (model, opt), _ = _pair("adam")
    stream, cuda = fake(model, opt, batch_size=8)
    _run(stream, 2)
    at_event_2 = copy.deepcopy(model.state_dict())
    state_2 = copy.deepcopy(opt.state_dict()["state"])
    opt.param_groups[0]["lr"] = 0.5  # forces a capture at the next epoch
    cuda.fail_capture = RuntimeError("operation failed due to a previous error during capture")
    with pytest.raises(RuntimeError, match="cannot capture the training step"):
        next(stream)
    assert _same_model(model, _loaded(at_event_2))
    for p_state, saved in zip(opt.state_dict()["state"].values(), state_2.values(), strict=True):
        assert all(torch.equal(p_state[k], saved[k]) for k in saved)
    assert opt.param_groups[0]["lr"] == 0.5


def test_state_created_while_capturing_is_refused_and_removed(fake: Callable[..., Any]) -> None:
    (model, opt), _ = _pair("sgd-momentum")
    stream, cuda = fake(model, opt, batch_size=8)
    weight = model[0].weight
    cuda.during_capture = lambda: opt.state[weight].update(late=torch.zeros(1))
    with pytest.raises(
        RuntimeError,
        match=r"^epoch_stream: cuda_graphs=True cannot capture the "
        r"training step: the model or optimizer created or replaced tensors",
    ):
        next(stream)
    assert len(opt.state) == 0


def test_an_ordinary_error_in_the_step_propagates_unchanged(fake: Callable[..., Any]) -> None:
    (model, opt), _ = _pair("adam")
    stream, _ = fake(model, opt, batch_size=8)

    def broken(module: nn.Module, inputs: Any) -> None:
        raise ValueError("the model's own error")

    model.register_forward_pre_hook(broken)
    with pytest.raises(ValueError, match=r"^the model's own error$"):
        next(stream)
    assert len(opt.state) == 0


def test_a_bad_loss_is_explained_as_in_the_eager_loop(fake: Callable[..., Any]) -> None:
    (model, opt), _ = _pair("adam")
    cuda = FakeCuda(model, opt)
    program = graphed.ModelStep(
        model,
        opt,
        lambda pred, y: pred - y,
        last_label=True,
        device=torch.device("cpu"),
        func="epoch_stream",
    )
    steps = graphed.GraphedSteps(program, func="epoch_stream", cuda=cuda)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"'loss_fn' must return a scalar tensor .* shape \(8, 1\)"
    ):
        steps.run_epoch(_data(), [(slice(0, 8), 8)])
