"""The progress bar's layout: its format, its width, and the room its values have.

The bar is drawn by tqdm; :func:`bar_class` adds ``{per_epoch}`` (``512ms/epoch``) to its format
and :func:`room` measures how many columns the values after the rate may take on a line of a
given width, so that :mod:`._progress_values` can fit every named key into them.
"""

from __future__ import annotations

import os
from typing import IO, Any

__all__ = ["Layout", "bar_class", "bar_format", "columns", "per_epoch", "room", "width"]

MIN_BAR = 5
"""The fewest columns the bar itself (``|###   |``) keeps when values need the room."""


def bar_format(
    total: int | None, desc: str | None, *, count: int, note: str = "", compact: bool = False
) -> str:
    """The bar's layout.

    ``|###  | 12/100 epochs`` and the time left when the total is known, ``12 epochs``
    otherwise; then the time so far, seconds per epoch and the values. ``note`` follows the
    count (``ended early``), where a line cut at 80 columns still shows it. ``compact`` leaves
    out the bar and the times, for values that need the room: ``12/100 epochs [251ms/epoch, ...]``.
    """
    label = "{desc}: " if desc else ""
    note = f" {note}" if note else ""
    unit = "epoch" if count == 1 and total is None else "epochs"
    if compact:
        count_part = "{n_fmt}/{total_fmt} epochs" if total is not None else "{n_fmt} " + unit
        return label + count_part + note + " [{per_epoch}{postfix}]"
    if total is not None:
        count_part = "|{bar}| {n_fmt}/{total_fmt} epochs" + note
        left = "" if note else "<{remaining}"  # nothing is left of a stream that ended
        return label + count_part + " [{elapsed}" + left + ", {per_epoch}{postfix}]"
    return label + "{n_fmt} " + unit + note + " [{elapsed}, {per_epoch}{postfix}]"


class Layout:
    """How one bar is laid out as its values grow: full, then compact, then (a file) wider.

    The named values always show whole. When they need more room than the line leaves, the
    bar and the times go first (:func:`bar_format`'s ``compact``); should that not do, a
    bar written to a file (a log) gets a longer line, while a terminal's line keeps its
    width. Each step is kept for the rest of the run, so the line does not jump about.
    """

    def __init__(self, total: int | None, desc: str | None, line: int, *, can_widen: bool):
        self.total, self.desc, self.line, self.can_widen = total, desc, line, can_widen
        self.compact = False

    def format(self, count: int, note: str = "") -> str:
        """The bar's format at ``count`` epochs (with ``note`` once the run has ended)."""
        return bar_format(self.total, self.desc, count=count, note=note, compact=self.compact)

    def room_for(self, bar: Any, needed: int) -> int:
        """The columns the values may take, made at least ``needed`` where the rules allow."""
        space = room(bar, self.line)
        if space >= needed:
            return space
        if not self.compact:
            self.compact = True
            bar.bar_format = self.format(bar.n + 1)
            space = room(bar, self.line)
        if space < needed and self.can_widen:
            self.line += needed - space
            bar.ncols = self.line
            space = needed
        return space

    def end(self, bar: Any, note: str) -> None:
        """Say after the count how the run ended (``(ended early)``), the values kept whole."""
        bar.bar_format = self.format(bar.n, note=note)
        if self.can_widen:
            self.line = widen_to_fit(bar, self.line)


def per_epoch(seconds: float) -> str:
    """Seconds per epoch in 3 significant digits, milliseconds below a second.

    Trailing zeros are kept (``0.0580ms``, ``10.0s``), so the text keeps its width from one
    epoch to the next: a bar's line is measured before it is drawn, and a rate that lost a
    zero in between cut the line's last column.

    Example:
        >>> per_epoch(12.345), per_epoch(0.51234), per_epoch(0.0000456), per_epoch(0.000058)
        ('12.3s/epoch', '512ms/epoch', '0.0456ms/epoch', '0.0580ms/epoch')
    """
    if seconds >= 1:
        return f"{_three_digits(seconds)}s/epoch"
    return f"{_three_digits(seconds * 1000)}ms/epoch"


def _three_digits(value: float) -> str:
    """``value`` in 3 significant digits, trailing zeros kept, no trailing point (``512``)."""
    return f"{value:#.3g}".rstrip(".")


def bar_class(base: Any) -> Any:
    """``base`` (a tqdm class) whose format also knows ``{per_epoch}``, e.g. ``512ms/epoch``.

    Its ``monitor_interval`` is 0: tqdm's monitor thread (started by the first bar, alive for
    good, to shorten the refresh of stalled bars) is never started by ours, since an epoch bar
    is refreshed at each epoch anyway and nothing we start may outlive its stream.
    """

    def format_dict(self: Any) -> dict[str, Any]:
        values: dict[str, Any] = base.format_dict.fget(self)
        n, elapsed = values.get("n", 0), values.get("elapsed", 0.0)
        values["per_epoch"] = per_epoch(elapsed / n) if n else "?s/epoch"
        return values

    return type("EpochBar", (base,), {"format_dict": property(format_dict), "monitor_interval": 0})


def columns(file: IO[str]) -> int:
    """The bar's width in columns: a terminal's, else 80."""
    chosen = width(file)
    if "ncols" in chosen:
        return int(chosen["ncols"])
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80


def width(file: IO[str]) -> dict[str, Any]:
    """A terminal's bar follows its width; elsewhere (a log file) the line is 80 columns."""
    isatty = getattr(file, "isatty", None)
    if callable(isatty) and isatty():
        try:
            os.get_terminal_size(file.fileno())
            return {"dynamic_ncols": True}
        except (AttributeError, OSError, ValueError):  # no size to follow
            pass
    return {"ncols": 80}


def widen_to_fit(bar: Any, line: int, *, least_bar: int = MIN_BAR) -> int:
    """Let a bar's line of ``line`` columns (a log file's) grow rather than be cut; return it.

    tqdm cuts a line longer than its ``ncols``, values and times included. The line is measured
    as it stands, its bar at ``least_bar`` columns; the bar gives up its other columns first,
    then the line grows, and stays grown (it does not jump about). One column is kept spare,
    as :func:`room` keeps one, for a rate that gains a digit before the line is drawn.
    """
    meter = {**bar.format_dict, "ncols": None}
    drawn = len(bar.format_meter(**meter)) + 1
    if "{bar}" in str(meter.get("bar_format") or ""):
        drawn += least_bar - 10  # drawn without a width, tqdm's bar is 10 columns
    if drawn <= line:
        return line
    bar.ncols = drawn
    return drawn


def room(bar: Any, line: int) -> int:
    """The columns the values may take on a ``line`` columns wide, as the bar stands now.

    The rest of the line (``|###| 12/100 epochs [00:03<00:21, 251ms/epoch, ``) is measured by
    drawing it as it will be after this epoch, without values, its bar at :data:`MIN_BAR`
    columns; one column is kept spare. Should the rate's text or the times grow by a column or
    two before the next measure, the bar gives up its columns before a value is cut.
    """
    meter = dict(bar.format_dict)
    fmt = str(meter.get("bar_format") or "")
    # as drawn after this epoch's update
    n, elapsed = int(meter.get("n", 0)) + 1, max(float(meter.get("elapsed", 0.0)), 1e-6)
    meter.update(postfix=None, ncols=None, n=n, elapsed=elapsed, per_epoch=per_epoch(elapsed / n))
    drawn = len(bar.format_meter(**meter))
    if "{bar}" in fmt:
        drawn += MIN_BAR - 10  # drawn without a width, tqdm's bar is 10 columns
    return line - drawn - len(", ") - 1
