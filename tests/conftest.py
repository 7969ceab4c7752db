"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


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
