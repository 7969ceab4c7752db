"""The output shown under the docs' code blocks: compute it, check it, refresh it.

A tutorial or how-to page shows, under each ``python`` block that prints, a
``text`` block with what it printed (stdout and stderr as an 80-column terminal
shows them, a progress bar included). The test suite checks that every such
block is there and matches what the code prints now, numbers aside (timings and
the last digits of losses vary across machines). After changing a page, refresh
its output blocks with:

    uv run python docs/_tools/outputs.py docs/tutorial.md docs/howto/*.md
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS = ("python", "py", "{code-block} python")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# A progress bar's width follows the text's; its partial cell is a digit.
_BAR = re.compile(r"\|#*[0-9]?\s*\|")
# The end of a bar's line is cut at 80 columns, where depends on the values' digits.
_BAR_TAIL = re.compile(r"^(.*\|BAR\|.*? \[).*$", re.MULTILINE)


@dataclass
class Block:
    """A fenced block: its fence's info string and the line range of its body."""

    info: str
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line
    skipped: bool  # preceded by <!-- no-run -->


class _Terminal(io.StringIO):
    """Captured stderr that claims to be a terminal, so progress bars draw."""

    def isatty(self) -> bool:
        return True


def blocks(lines: list[str]) -> list[Block]:
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("```"):
            info = lines[i].strip()[3:].strip()
            skipped = i > 0 and lines[i - 1].strip() == "<!-- no-run -->"
            start = i
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                i += 1
            found.append(Block(info, start, i, skipped))
        i += 1
    return found


def shown(text: str) -> str:
    """What a terminal shows of ``text``: each line as last redrawn."""
    lines = [line.split("\r") for line in text.replace("\r\n", "\n").split("\n")]
    kept = [next((p for p in reversed(parts) if p.strip()), "") for parts in lines]
    return "\n".join(line.rstrip() for line in kept).strip("\n")


def masked(text: str) -> str:
    """``text`` with every number replaced by ``N``: compare it, not the values."""
    bars = _BAR_TAIL.sub(r"\1...", _BAR.sub("|BAR|", text.strip()))
    return _NUMBER.sub("N", bars)


def outputs(page: Path, workdir: Path | None = None) -> list[tuple[Block, str]]:
    """Run the page's code blocks in order, in one namespace, in ``workdir``.

    A temporary folder when ``workdir`` is None. Returns each run block with what
    it printed.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return outputs(page, Path(tmp))
    lines = page.read_text(encoding="utf-8").splitlines()
    namespace: dict[str, Any] = {"__name__": "__markdown__"}
    results: list[tuple[Block, str]] = []
    previous = Path.cwd()
    os.chdir(workdir)
    # Lightning's banners ("GPU available: ...") are not what a page is about.
    import lightning.pytorch  # noqa: F401  (so that its loggers exist)

    loggers = logging.root.manager.loggerDict
    names = [n for n in loggers if n.startswith("lightning")]
    quiet = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        for block in blocks(lines):
            if block.info not in RUNS or block.skipped:
                continue
            code = "\n".join(lines[block.start + 1 : block.end])
            where = f"{page}:{block.start + 2}"
            terminal = _Terminal()  # stdout and stderr, in the order written
            with (
                contextlib.redirect_stdout(terminal),
                contextlib.redirect_stderr(terminal),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")  # pages show what code prints
                exec(compile(code, where, "exec"), namespace)
            results.append((block, shown(terminal.getvalue())))
    finally:
        os.chdir(previous)
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return results


def shown_after(lines: list[str], block: Block) -> Block | None:
    """The ``text`` block right after ``block`` (blank lines allowed), if any."""
    following = [b for b in blocks(lines) if b.start > block.end]
    if not following or following[0].info != "text":
        return None
    between = lines[block.end + 1 : following[0].start]
    return following[0] if all(not line.strip() for line in between) else None


def refresh(page: Path) -> None:
    """Write each block's output under it, replacing the one already there."""
    results = outputs(page)
    lines = page.read_text(encoding="utf-8").splitlines()
    for block, printed in reversed(results):
        if not printed:
            continue
        existing = shown_after(lines, block)
        new = ["```text", *printed.splitlines(), "```"]
        if existing is not None:
            lines[existing.start : existing.end + 1] = new
        else:
            lines[block.end + 1 : block.end + 1] = new
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in sys.argv[1:]:
        refresh(Path(name).resolve())
        print("refreshed", name)
