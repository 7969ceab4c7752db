"""Plots of a run: :func:`plot_history` after the fact, :func:`live_plot` while it trains.

Both need matplotlib (optional extra ``fitstream[plot]``). They build figures with
matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`), never pyplot's global
state, so they work the same in a notebook, a script and a headless job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._internal.optional import require
from . import _curves
from .live_plotting import LivePlot, live_plot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LivePlot", "live_plot", "plot_history"]


def plot_history(
    history: Any,
    keys: str | Sequence[str],
    *,
    ax: Axes | None = None,
    save: str | os.PathLike[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the curves of ``keys`` against each event's ``step`` and return the figure.

    ``history`` is any record of a run:

    * a list (or any iterable) of event dicts, e.g. what :func:`fitstream.collect` returns;
    * a path to a JSONL file written by :func:`fitstream.collect_jsonl` (one JSON object per
      line; ``NaN``, ``Infinity`` and ``null`` are read as gaps);
    * a pandas DataFrame, e.g. from :func:`fitstream.collect_pd` (pandas itself is not
      needed for the other two forms). A ``step`` index counts as the ``step`` column.

    A value that is missing from an event, ``None``, NaN, infinite or not a number leaves a gap
    in its curve (NaN in the plotted data): it is never an error. A point with no neighbour to
    join, such as a validation metric computed every fifth epoch, is drawn as a dot. When no
    event has a ``step``, the x-axis is the event's position (1, 2, ...).

    Args:
        history: The events, a JSONL path, or a DataFrame.
        keys: One event name or a sequence of names, e.g. ``("train_loss", "val_loss")``.
        ax: Draw into this existing matplotlib Axes (e.g. one panel of a grid) instead of a
            new figure, adding to what it shows (call it again with another run's history
            to compare runs on one chart); the Axes' figure is returned.
        save: Write the figure to this path, creating missing folders. PNG unless the suffix
            names another format matplotlib writes (``.svg``, ``.pdf``).
        figsize: ``(width, height)`` of a new figure in inches; ``(6.4, 4.0)`` when ``None``.
            The saved PNG is ``figsize * dpi`` pixels, 640 x 400 by default.
        dpi: Pixels per inch of a new figure (100 when ``None``) and of the saved file (the
            figure's own dpi when ``None``).
        title: A title for the Axes.

    Returns:
        The :class:`matplotlib.figure.Figure` (in a notebook it displays itself when it is
        the cell's last expression).

    Raises:
        TypeError: ``history`` is none of the three forms, ``keys`` holds a non-string, or
            ``ax`` is not a matplotlib Axes.
        ValueError: ``history`` is empty, a JSONL line is not a JSON object, only some
            events have a ``step``, ``keys`` is empty, or ``figsize``/``dpi`` are not
            positive (or ``figsize`` is given together with ``ax``).
        KeyError: No event has one of ``keys``; the message lists the keys the events have.
        IsADirectoryError, NotADirectoryError, PermissionError: ``save`` is a folder, lies
            under a file, or cannot be written (checked before anything is drawn).
        ImportError: matplotlib is not installed (``pip install 'fitstream[plot]'``).

    Example:
        >>> history = [
        ...     {"step": 1, "train_loss": 0.9, "val_loss": 1.0},
        ...     {"step": 2, "train_loss": 0.5},
        ...     {"step": 3, "train_loss": 0.4, "val_loss": float("nan")},
        ... ]
        >>> fig = plot_history(history, ["train_loss", "val_loss"])
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['train_loss', 'val_loss']
        >>> fig.axes[0].get_lines()[1].get_ydata().tolist()
        [1.0, nan, nan]
    """
    names = _curves.check_keys(keys, func="plot_history")
    _curves.check_figsize(figsize, 100 if dpi is None else dpi, func="plot_history")
    if title is not None and not isinstance(title, str):
        raise TypeError(
            f"plot_history: title must be a string or None, got {type(title).__name__}: "
            f"{title!r:.60}"
        )
    require("matplotlib", "plot", feature="plot_history")
    from matplotlib.figure import Figure

    _curves.check_ax(ax, figsize, func="plot_history")
    path = _curves.check_save(save, func="plot_history")

    events = _curves.read_history(history, func="plot_history")
    present = {key for event in events for key in event}
    absent = [key for key in names if key not in present]
    if absent:
        raise KeyError(
            f"plot_history: no event has the key(s) {absent}; the events have {sorted(present)}"
        )

    steps = [_curves.x_value(event) for event in events]
    missing = [i for i, step in enumerate(steps) if step is None]
    if not missing:
        x: list[float] = [step for step in steps if step is not None]
        xlabel = "step"
    elif len(missing) == len(events):
        x = [float(i) for i in range(1, len(events) + 1)]
        xlabel = "event"
    else:
        raise ValueError(
            f"plot_history: only some events have a numeric 'step' (event {missing[0]} has "
            f"none: {dict(events[missing[0]])!r:.80}); give every event a step or none"
        )
    columns = {key: [_curves.y_value(event.get(key)) for event in events] for key in names}

    if ax is None:
        ax = Figure(figsize=figsize or _curves.DEFAULT_FIGSIZE, dpi=dpi or 100).add_subplot()
    _curves.draw(ax, x, columns, xlabel=xlabel, title=title, clear=False)
    # An Axes of a SubFigure belongs to a SubFigure: save and return the whole figure.
    figure = _curves.figure_of(ax)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi if dpi is None else dpi)
    return figure
