"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn


class CountingSource:
    """A stream of ``{"step": i, **fields(i)}`` events that records how far it was pulled.

    ``pulled`` counts events handed out; ``closed`` is set when ``close()`` is called (stages
    must close their upstream); ``fail_at`` makes the source raise ``RuntimeError`` when that
    1-based event would be produced.
    """

    def __init__(
        self,
        n: int | None = None,
        fields: Callable[[int], dict[str, Any]] | None = None,
        fail_at: int | None = None,
    ) -> None:
        self.n = n
        self.fields = fields or (lambda i: {"val_loss": 1.0 / i})
        self.fail_at = fail_at
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.closed or (self.n is not None and self.pulled >= self.n):
            raise StopIteration
        step = self.pulled + 1
        if self.fail_at is not None and step == self.fail_at:
            raise RuntimeError(f"source failed at event {step}")
        self.pulled = step
        return {"step": step, **self.fields(step)}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def counting_source() -> type[CountingSource]:
    """The :class:`CountingSource` class, to build sources with the arguments a test needs."""
    return CountingSource


class StandInEnsemble(nn.Module):
    """A stand-in for ``ensemble_stream``'s ensemble, satisfying ``EnsembleLike``.

    ``k`` members, each ``nn.Linear(n_in, n_out)`` (followed by ``nn.Dropout(dropout)`` when
    ``dropout`` > 0); ``forward`` stacks the members' outputs on a new leading dim, giving
    ``(k, batch, n_out)``. ``hparams`` default to ``{"lr": 0.1 * (k + 1), "seed": k}``.
    :meth:`train_epoch` stands for an epoch of training: it moves every *active* member's
    weights by one, so a frozen member keeps the weights it had when it was frozen.
    ``freezes`` records the ``freeze`` calls in order.
    """

    def __init__(
        self,
        k: int = 3,
        n_in: int = 3,
        n_out: int = 1,
        *,
        hparams: list[dict[str, Any]] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out), nn.Dropout(dropout))
            if dropout
            else nn.Linear(n_in, n_out)
            for _ in range(k)
        )
        self._hparams = hparams or [{"lr": 0.1 * (i + 1), "seed": i} for i in range(k)]
        self._active = [True] * k
        self.freezes: list[int] = []

    @property
    def members(self) -> list[nn.Module]:
        return list(self.layers)

    @property
    def hparams(self) -> list[dict[str, Any]]:
        return [dict(h) for h in self._hparams]

    @property
    def active(self) -> list[bool]:
        return list(self._active)

    def freeze(self, member: int) -> None:
        self._active[member] = False
        self.freezes.append(member)

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.layers])

    def train_epoch(self) -> StandInEnsemble:
        """Move every active member's parameters by +1 (an epoch of "training")."""
        with torch.no_grad():
            for member, active in zip(self.layers, self._active, strict=True):
                if active:
                    for p in member.parameters():
                        p.add_(1.0)
        return self


@pytest.fixture
def stand_in_ensemble() -> type[StandInEnsemble]:
    """The :class:`StandInEnsemble` class, to build ensembles of the size a test needs."""
    return StandInEnsemble


def ensemble_source(
    ensemble: StandInEnsemble,
    values: dict[str, list[list[float]]],
    *,
    fail_at: int | None = None,
) -> CountingSource:
    """A counting source of ensemble events: event i trains the active members once, then
    holds ``model=ensemble`` and, per key, the per-member list ``values[key][i - 1]``."""
    n = len(next(iter(values.values())))

    def fields(i: int) -> dict[str, Any]:
        ensemble.train_epoch()
        return {"model": ensemble, **{key: list(rows[i - 1]) for key, rows in values.items()}}

    return CountingSource(n, fields, fail_at=fail_at)


@pytest.fixture
def ensemble_events() -> Callable[..., CountingSource]:
    """:func:`ensemble_source`, to build counting sources of ensemble events."""
    return ensemble_source


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Run the suite's tiny models on one intra-op thread.

    On a busy 2-core machine torch's worker threads spin against each other and an epoch of a
    small MLP takes a second instead of milliseconds; one thread is also what such models need.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def markdown_python_blocks(path: str | Path) -> list[tuple[int, str]]:
    """Return ``(line_number, code)`` for each fenced block of a Markdown file that runs.

    Blocks fenced as ```` ```python ```` (or MyST's ```` ```{code-block} python ````) run;
    any other fence (``text``, ``console``, ``shell``...) is shown, not run. A block preceded
    by the line ``<!-- no-run -->`` is skipped too.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    blocks: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            info = fence[3:].strip()
            skip = i > 0 and lines[i - 1].strip() == "<!-- no-run -->"
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                i += 1
            runs = info in ("python", "py", "{code-block} python", "{code-cell} python")
            if runs and not skip:
                blocks.append((start + 1, "\n".join(lines[start:i])))
        i += 1
    return blocks


def run_markdown(path: str | Path, workdir: Path) -> dict[str, Any]:
    """Run every Python block of a Markdown file, in order, in one namespace, inside ``workdir``.

    A failing block raises with the file and line number of the block in the message.
    Returns the namespace so a test can check what the page computed.
    """
    import os

    namespace: dict[str, Any] = {"__name__": "__markdown__"}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for line, code in markdown_python_blocks(path):
            try:
                exec(compile(code, f"{path}:{line}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"code block at {path}:{line} failed: {exc!r}") from exc
    finally:
        os.chdir(previous)
    return namespace


@pytest.fixture
def markdown_runner() -> Callable[[str | Path, Path], dict[str, Any]]:
    """:func:`run_markdown`, for tests that execute the README's and the docs' code blocks."""
    return run_markdown


@pytest.fixture(autouse=True)
def _no_stream_thread_left() -> Iterator[None]:
    """Fail a test that leaves a stream's worker thread ("fitstream-bridge-...") running."""
    yield
    import gc
    import threading

    def running() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("fitstream-bridge-")]

    if running():
        gc.collect()  # an abandoned stream in a reference cycle is closed by its finalizer
    assert not running(), f"stream threads still running after the test: {running()}"


def sweep_events(
    k: int, n: int, hparams: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """n events of a :class:`StandInEnsemble` of k members, as a sweep's stream holds them.

    Member m's ``train_loss`` at step s is ``(m + 1) / s`` and its ``val_loss`` twice that;
    ``train_time_sec`` is shared. Without ``hparams`` member m has Adam's ``lr = 10**-(m+1)``
    and ``betas`` (a tuple, as an optimizer's param group holds it).
    """
    ensemble = StandInEnsemble(
        k,
        hparams=hparams
        or [{"optimizer": "Adam", "lr": 10.0 ** -(m + 1), "betas": (0.9, 0.999)} for m in range(k)],
    )
    return [
        {
            "step": s,
            "model": ensemble,
            "train_loss": [(m + 1) / s for m in range(k)],
            "val_loss": [2 * (m + 1) / s for m in range(k)],
            "train_time_sec": 0.5,
        }
        for s in range(1, n + 1)
    ]


@pytest.fixture
def sweep() -> Callable[..., list[dict[str, Any]]]:
    """:func:`sweep_events`: ``sweep(k, n)`` is n events of an ensemble of k members."""
    return sweep_events
