"""ensemble_stream(cuda_graphs=...): refusals at the call, and the graphed path run on the CPU.

As in tests/test_cuda_graphs.py, a stand-in for the CUDA calls (:class:`FakeCuda`) runs the
whole graphed path on the CPU: "capture" records the step and "replay" runs it, refusing to run
if anything the step's key covers changed since capture (a real graph would replay stale work),
and spoiling the host's copy of Adam's step position first (a graph cannot read it). Each graphed
run is compared with an eager ``ensemble_stream`` run from the same weights and data order,
member by member. The real graphs are in tests/test_cuda_graphs_gpu.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from itertools import islice
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import ensemble_stream
from fitstream.sources import _shared
from fitstream.sources.ensemble import adam as adam_module
from fitstream.sources.ensemble import training as ensemble_module
from fitstream.sources.ensemble.adam import VectorAdam
from fitstream.sources.ensemble.sgd import VectorSGD
from fitstream.sources.graphed import steps as graphed


@pytest.fixture(autouse=True)
def _eager_adam_unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The eager side steps Adam as a CUDA device would: never through the CPU's fused kernel.

    The fake device of these tests runs on the CPU, where the eager step would otherwise take
    ``torch._fused_adamw_`` (rounded otherwise than the replayed step, beyond 1e-6).
    """
    monkeypatch.setattr(adam_module, "fused_on_cpu", lambda: False)


K = 3


class Net(nn.Module):
    """A custom module: trained through the general vmap path, not the batched-matmul one."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 6)
        self.out = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def _models(general: bool = False) -> list[nn.Module]:
    models: list[nn.Module] = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(
            Net() if general else nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
        )
    return models


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(n, 3, generator=g)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)


# Per-member hyperparameters: member k gets the k-th value of each list.
OPTIMIZERS: dict[str, Callable[[int, Any], torch.optim.Optimizer]] = {
    "sgd": lambda k, ps: torch.optim.SGD(ps, lr=[0.01, 0.05, 0.1][k]),
    "sgd-momentum": lambda k, ps: torch.optim.SGD(
        ps, lr=0.05, momentum=[0.0, 0.5, 0.9][k], weight_decay=[0.0, 0.01, 0.1][k]
    ),
    "sgd-nesterov-dampening": lambda k, ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, dampening=[0.0, 0.0, 0.3][k], nesterov=[True, False, False][k]
    ),
    "adam": lambda k, ps: torch.optim.Adam(ps, lr=[0.001, 0.01, 0.03][k], betas=(0.8, 0.99)),
    "adamw": lambda k, ps: torch.optim.AdamW(
        ps, lr=0.01, weight_decay=[0.0, 0.1, 0.5][k], amsgrad=[False, True, True][k]
    ),
}


class FakeCuda:
    """Stands in for ``CudaGraphs``: capture records the step, replay runs it."""

    def __init__(self) -> None:
        self.program: Any = None
        self.captures = 0
        self.replays = 0
        self.in_warm_up = False
        self.fail_capture: BaseException | None = None

    def side_stream(self) -> str:
        return "side"

    @contextmanager
    def warm_up(self, stream: Any) -> Iterator[None]:
        self.in_warm_up = True
        try:
            yield
        finally:
            self.in_warm_up = False

    def capture(self, fn: Callable[[], None], stream: Any) -> Any:
        if self.fail_capture is not None:
            raise self.fail_capture
        self.captures += 1
        key: Hashable = self.program.key()
        stepper = self.program.stepper

        def replay() -> None:
            assert self.program.key() == key, "replayed a stale graph"
            if isinstance(stepper, VectorAdam):
                stepper.cursor = 10**9  # a graph replays device work only: never this number
            fn()
            self.replays += 1

        return SimpleNamespace(replay=replay)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``start(models, opts, **kw)``: ``ensemble_stream(..., cuda_graphs=True)`` on the CPU."""

    def start(models: list[nn.Module], opts: list[Any], **kwargs: Any) -> Any:
        cuda = FakeCuda()

        def steps(program: Any, *, func: str, cuda: Any) -> graphed.GraphedSteps:
            cuda.program = program
            return graphed.GraphedSteps(program, func=func, cuda=cuda)

        monkeypatch.setattr(ensemble_module, "CudaGraphs", lambda device: cuda)
        monkeypatch.setattr(ensemble_module, "GraphedSteps", steps)
        data = kwargs.pop("data", None) or _data(kwargs.pop("n", 50))
        loss_fn = kwargs.pop("loss_fn", nn.MSELoss())
        stream = ensemble_stream(data, models, opts, loss_fn, cuda_graphs=True, **kwargs)
        return stream, cuda

    monkeypatch.setattr(_shared, "check_cuda_graphs", lambda flag, *a, **kw: flag)
    return start


def _pair(kind: str, general: bool = False) -> list[tuple[list[nn.Module], list[Any]]]:
    pairs = []
    for _ in range(2):
        models = _models(general)
        pairs.append((models, [OPTIMIZERS[kind](k, m.parameters()) for k, m in enumerate(models)]))
    return pairs


def _run(
    stream: Iterator[dict[str, Any]],
    epochs: int,
    between: Callable[[dict[str, Any]], None] | None = None,
) -> list[list[float]]:
    losses = []
    for event in islice(stream, epochs):
        losses.append(event["train_loss"])
        if between is not None:
            between(event)
    return losses


def _same_members(a: list[nn.Module], b: list[nn.Module]) -> None:
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        for (name, u), v in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-7, msg=f"member {k} {name}")


def _approx(got: list[list[float]], expected: list[list[float]]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-6)


def _kw(**kwargs: Any) -> dict[str, Any]:
    return {"batch_size": 8, "generator": torch.Generator().manual_seed(5), **kwargs}


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize(("shuffle", "n"), [(True, 50), (False, 50), (True, 48)])
def test_graphed_ensemble_equals_the_eager_one_per_member(
    fake: Callable[..., Any], kind: str, shuffle: bool, n: int
) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    eager = ensemble_stream(_data(n), m_eager, o_eager, nn.MSELoss(), **_kw(shuffle=shuffle))
    stream, cuda = fake(m_graph, o_graph, n=n, **_kw(shuffle=shuffle))
    expected = _run(eager, 5)
    _approx(_run(stream, 5), expected)
    assert len(set(expected[-1])) == K  # the members really differ
    _same_members(m_eager, m_graph)
    assert cuda.captures == (2 if n % 8 else 1)  # full batches, and a short last batch
    first_eager = 1 if kind.startswith("sgd-") or kind == "adamw" else 0  # state-making step
    assert cuda.replays == 5 * -(-n // 8) - first_eager


@pytest.mark.parametrize(
    "options",
    [{"clip_grad_norm": 0.05}, {"clip_grad_value": 0.01}, {"autocast": torch.bfloat16}],
    ids=["clip-norm", "clip-value", "bf16"],
)
def test_the_captured_ensemble_step_clips_and_autocasts_as_the_eager_one(
    fake: Callable[..., Any], options: dict[str, Any]
) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair("adamw")
    eager = ensemble_stream(_data(), m_eager, o_eager, nn.MSELoss(), **_kw(**options))
    stream, cuda = fake(m_graph, o_graph, **_kw(**options))
    _approx(_run(stream, 3), _run(eager, 3))
    _same_members(m_eager, m_graph)
    assert cuda.replays > 0
    (m_plain, o_plain), _ = _pair("adamw")
    _run(ensemble_stream(_data(), m_plain, o_plain, nn.MSELoss(), **_kw()), 3)
    with pytest.raises(AssertionError):
        _same_members(m_plain, m_graph)  # the options did change the training


@pytest.mark.parametrize("kind", ["sgd-momentum", "adamw"])
def test_after_the_capturing_epoch_the_optimizer_state_is_the_eager_one(
    fake: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    made: list[Any] = []
    for base in (VectorSGD, VectorAdam):

        class Recording(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        monkeypatch.setattr(ensemble_module, base.__name__, Recording)
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    next(ensemble_stream(_data(), m_eager, o_eager, nn.MSELoss(), **_kw()))
    stream, cuda = fake(m_graph, o_graph, **_kw())
    next(stream)  # eager first step, warm-ups (undone), captures, replays
    assert cuda.captures == 2
    eager, graph = made
    for lists_e, lists_g in zip(eager.state_lists(), graph.state_lists(), strict=True):
        for e, g in zip(lists_e, lists_g, strict=True):
            assert e is not None
            assert g is not None
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-8)
    _same_members(m_eager, m_graph)


@pytest.mark.parametrize("kind", ["sgd-momentum", "adamw"])
def test_the_general_vmap_path_and_no_labels(fake: Callable[..., Any], kind: str) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind, general=True)
    X, _ = _data()

    def loss_fn(pred: torch.Tensor) -> torch.Tensor:
        return (pred - 1.0).square().mean()

    kw = _kw(last_label=False)
    eager = ensemble_stream((X,), m_eager, o_eager, loss_fn, **kw)
    stream, cuda = fake(m_graph, o_graph, data=(X,), loss_fn=loss_fn, **_kw(last_label=False))
    _approx(_run(stream, 3), _run(eager, 3))
    _same_members(m_eager, m_graph)
    assert cuda.replays > 0


def test_per_member_data_orders(fake: Callable[..., Any]) -> None:
    (m_eager, o_eager), (m_graph, o_graph) = _pair("adam")

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in range(K)]

    eager = ensemble_stream(_data(), m_eager, o_eager, nn.MSELoss(), batch_size=8, generator=gens())
    stream, cuda = fake(m_graph, o_graph, batch_size=8, generator=gens())
    _approx(_run(stream, 4), _run(eager, 4))
    _same_members(m_eager, m_graph)
    assert cuda.captures == 2


# --- what the consumer does while holding an event ----------------------------------------

Change = Callable[[dict[str, Any], list[nn.Module], list[Any], dict[str, Any]], None]


def _set(k: int, key: str, value: Any) -> Change:
    return lambda event, models, opts, saved: opts[k].param_groups[0].__setitem__(key, value)


CHANGES: dict[str, tuple[str, Change, int]] = {
    # name: (optimizer kind, what the consumer does at event 2, captures of full batches)
    "lr, no new capture": ("adam", _set(1, "lr", 0.2), 1),
    "betas, no new capture": ("adam", _set(0, "betas", (0.5, 0.9)), 1),
    "sgd lr and momentum values, no new capture": ("sgd-momentum", _set(2, "momentum", 0.1), 1),
    "weight decay switched on": ("adam", _set(0, "weight_decay", 0.3), 2),
    "momentum switched on": ("sgd", _set(0, "momentum", 0.9), 2),
    "freeze": ("adamw", lambda event, models, opts, saved: event["model"].freeze(1), 2),
    "member load_state_dict": (
        "sgd-momentum",
        lambda event, models, opts, saved: models[0].load_state_dict(saved["member"]),
        1,
    ),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_changes_take_effect_next_epoch(fake: Callable[..., Any], name: str) -> None:
    kind, change, captures = CHANGES[name]
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    runs = []
    for models, opts, graph in ((m_eager, o_eager, False), (m_graph, o_graph, True)):
        saved: dict[str, Any] = {}

        def between(
            event: dict[str, Any],
            models: list[nn.Module] = models,
            opts: list[Any] = opts,
            saved: dict[str, Any] = saved,
        ) -> None:
            if event["step"] == 1:
                saved["member"] = copy.deepcopy(models[2].state_dict())
            if event["step"] == 2:
                change(event, models, opts, saved)

        if graph:
            stream, cuda = fake(models, opts, **_kw())
        else:
            stream = ensemble_stream(_data(), models, opts, nn.MSELoss(), **_kw())
        runs.append(_run(stream, 5, between))
    _approx(runs[1], runs[0])
    _same_members(m_eager, m_graph)
    assert cuda.captures == 2 * captures  # a graph for the full batches, one for the last


def test_a_frozen_member_keeps_its_weights_under_replay(fake: Callable[..., Any]) -> None:
    (models, opts), _ = _pair("adam")
    stream, _ = fake(models, opts, **_kw())
    event = next(stream)
    event["model"].freeze(0)
    kept = copy.deepcopy(models[0].state_dict())
    moving = copy.deepcopy(models[1].state_dict())
    _run(stream, 2)
    assert all(torch.equal(v, kept[k]) for k, v in models[0].state_dict().items())
    assert not torch.equal(models[1].state_dict()["0.weight"], moving["0.weight"])


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_cuda_graphs_must_be_a_bool(bad: object) -> None:
    (models, opts), _ = _pair("sgd")
    with pytest.raises(TypeError, match=r"ensemble_stream: 'cuda_graphs' must be True or False"):
        ensemble_stream(_data(), models, opts, nn.MSELoss(), cuda_graphs=bad)  # type: ignore[arg-type]


def test_cpu_data_is_refused_at_the_call_naming_cuda_graphs() -> None:
    (models, opts), _ = _pair("adam")
    before = [copy.deepcopy(m.state_dict()) for m in models]
    with pytest.raises(
        ValueError,
        match=r"^ensemble_stream: cuda_graphs=True needs the data and the model on a CUDA",
    ):
        ensemble_stream(_data(), models, opts, nn.MSELoss(), cuda_graphs=True)
    for m, b in zip(models, before, strict=True):
        assert all(torch.equal(v, b[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("case", ["other optimizer", "state it cannot stack"])
def test_member_by_member_optimizers_are_refused_at_the_call(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(_shared, "check_cuda_graphs", lambda flag, *a, **kw: flag)
    models = _models()
    if case == "other optimizer":
        opts: list[Any] = [torch.optim.RMSprop(m.parameters(), lr=0.01) for m in models]
        said = r"no vectorised step for RMSprop"
    else:
        opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
        models[1](torch.ones(2, 3)).sum().backward()
        opts[1].step()
        next(iter(opts[1].state.values()))["step"] = torch.tensor(7.0)  # counts now differ
        said = r"optimizers\[1\] holds different step counts"
    with pytest.raises(
        ValueError,
        match=rf"^ensemble_stream: cuda_graphs=True needs the vectorised optimizer step .*"
        rf"{said}.*; pass cuda_graphs=False",
    ):
        ensemble_stream(_data(), models, opts, nn.MSELoss(), cuda_graphs=True)


def _weights(models: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [copy.deepcopy(m.state_dict()) for m in models]


def _unchanged(models: list[nn.Module], saved: list[dict[str, torch.Tensor]]) -> bool:
    return all(
        torch.equal(v, s[k])
        for m, s in zip(models, saved, strict=True)
        for k, v in m.state_dict().items()
    )


def test_a_failed_capture_leaves_the_members_untouched_and_ends_the_stream(
    fake: Callable[..., Any],
) -> None:
    (models, opts), _ = _pair("sgd-momentum")
    before = _weights(models)
    stream, cuda = fake(models, opts, **_kw())
    cuda.fail_capture = RuntimeError("CUDA error: operation not permitted when stream is capturing")
    with pytest.raises(
        RuntimeError,
        match=r"^ensemble_stream: cuda_graphs=True cannot capture the training step: .*"
        r"operation not permitted when stream is capturing",
    ):
        next(stream)
    assert _unchanged(models, before)  # the eager first step was undone as well
    assert cuda.program.stepper.buffers == [None]  # and the momentum it created
    with pytest.raises(StopIteration):
        next(stream)


def test_a_host_sync_in_the_loss_is_named_at_the_first_next(fake: Callable[..., Any]) -> None:
    (models, opts), _ = _pair("adam")
    before = _weights(models)
    holder: dict[str, Any] = {}

    def syncing(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if holder["cuda"].in_warm_up:  # what set_sync_debug_mode("error") raises on .item()
            raise RuntimeError("called a synchronizing CUDA operation")
        return (pred - target).square().mean()

    stream, cuda = fake(models, opts, loss_fn=syncing, **_kw())
    holder["cuda"] = cuda
    with pytest.raises(
        RuntimeError,
        match=r"^ensemble_stream: cuda_graphs=True cannot capture the training step: it makes "
        r"the host wait for the GPU .*\.item\(\).*cuda_graphs=False",
    ):
        next(stream)
    assert _unchanged(models, before)
    assert cuda.program.stepper.cursor == 0


def test_a_failed_recapture_keeps_the_members_of_the_last_event(fake: Callable[..., Any]) -> None:
    (models, opts), _ = _pair("adam")
    stream, cuda = fake(models, opts, **_kw())
    assert len(_run(stream, 2)) == 2
    at_event_2 = _weights(models)
    stepper = cuda.program.stepper
    moments = [t.clone() for t in stepper.exp_avg]
    opts[0].param_groups[0]["weight_decay"] = 0.5  # switches weight decay on: a new capture
    cuda.fail_capture = RuntimeError("operation failed due to a previous error during capture")
    with pytest.raises(RuntimeError, match="cannot capture the training step"):
        next(stream)
    assert _unchanged(models, at_event_2)
    assert all(torch.equal(a, b) for a, b in zip(stepper.exp_avg, moments, strict=True))


def test_an_ordinary_error_in_the_step_propagates_unchanged(fake: Callable[..., Any]) -> None:
    (models, opts), _ = _pair("adam")
    before = _weights(models)

    def broken(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise ValueError("the loss's own error")

    stream, _ = fake(models, opts, loss_fn=broken, **_kw())
    with pytest.raises(ValueError, match=r"^the loss's own error$"):
        next(stream)
    assert _unchanged(models, before)


@pytest.mark.parametrize("kind", ["sgd-momentum", "adamw"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_graphed_members_on_their_own_rows_equal_the_eager_ones(
    fake: Callable[..., Any], kind: str, shuffle: bool
) -> None:
    # Equal row counts (a bootstrap; 50 rows: a short last batch): each member's batches are
    # blocks of its own row indices, gathered inside the graph from the full data.
    from fitstream import bootstrap

    rows = [train for train, _ in bootstrap(50, K, generator=torch.Generator().manual_seed(1))]
    (m_eager, o_eager), (m_graph, o_graph) = _pair(kind)
    eager = ensemble_stream(
        _data(50), m_eager, o_eager, nn.MSELoss(), rows=rows, **_kw(shuffle=shuffle)
    )
    stream, cuda = fake(m_graph, o_graph, n=50, rows=rows, **_kw(shuffle=shuffle))
    expected = _run(eager, 4)
    _approx(_run(stream, 4), expected)
    _same_members(m_eager, m_graph)
    assert cuda.captures == 2
    assert cuda.replays > 0


def test_graphed_members_refuse_unequal_row_counts(fake: Callable[..., Any]) -> None:
    models, opts = _pair("sgd")[0]
    rows = [torch.arange(50), torch.arange(40), torch.arange(50)]
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs every member to have as many"):
        fake(models, opts, n=50, rows=rows, batch_size=8)
