"""Plots of a run: :func:`plot_history` after the fact, :func:`live_plot` while it trains.

Both need matplotlib (optional extra ``fitstream[plot]``). They build figures with
matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`), never pyplot's global
state, so they work the same in a notebook, a script and a headless job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._internal.members import ensemble_of
from .._internal.optional import require
from ..experiments.history import is_study, named_histories, study_key, study_mode
from ..experiments.history.searches import is_search
from ..experiments.history.streams import split_streams
from . import _bands, _curves, _drawing, _panels
from ._ylim import check_ylim, flat, set_ylim
from .live_plotting import LivePlot, live_plot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LivePlot", "live_plot", "plot_history"]


def _check_arguments(
    keys: object, *, ax: object, figsize: object, dpi: object, title: object
) -> tuple[str, ...] | None:
    names = None if keys is None else _curves.check_keys(keys, func="plot_history")
    _curves.check_figsize(figsize, 100 if dpi is None else dpi, func="plot_history")
    if ax is not None and figsize is not None:
        raise ValueError(
            "plot_history: figsize applies to a new figure; with ax= the size is that of "
            "ax.figure (set it with ax.figure.set_size_inches)"
        )
    if title is not None and not isinstance(title, str):
        raise TypeError(
            f"plot_history: title must be a string or None, got {type(title).__name__}: "
            f"{title!r:.60}"
        )
    return names


def _x_axis(events: Sequence[Any]) -> tuple[list[float], str]:
    """The x values (each event's step, or its position when none has one) and their label."""
    steps = [_curves.x_value(event) for event in events]
    missing = [i for i, step in enumerate(steps) if step is None]
    if not missing:
        return [step for step in steps if step is not None], "epoch"
    if len(missing) == len(events):
        return [float(i) for i in range(1, len(events) + 1)], "event"
    raise ValueError(
        f"plot_history: only some events have a numeric 'step' (event {missing[0]} has "
        f"none: {dict(events[missing[0]])!r:.80}); give every event a step or none"
    )


def _draw_panel(
    panel: Any, shown: dict[str, Any], group: list[str], by: tuple[str, ...] | None, *,
    source: Any, x: list[float], xlabel: str, title: str | None, names: Any, ylim: object,
) -> None:  # fmt: skip
    """One panel: the keys' curves (or their settings' bands), finished, its y-range set."""
    if by is not None:
        drawn = _bands.draw_groups(panel, source, group, by, func="plot_history")
        _drawing.finish_axes(panel, shown, xlabel=xlabel, title=title)
        set_ylim(panel, ylim, drawn)
        return
    _drawing.draw(panel, x, shown, xlabel=xlabel, title=title, clear=False, names=names)
    set_ylim(panel, ylim, flat(shown))


def _by_setting_only(history: object) -> bool:
    """A study, or a dict of named histories: drawn by setting only (``group_by``)."""
    return is_study(history) or named_histories(history) is not None


def _check_one_stream(events: Sequence[Any]) -> None:
    """Refuse, without ``group_by``, a search's events or several streams joined in one list.

    Each member is one line through the events; a search's members change trials, and the
    members of two joined streams would be drawn as one line whose steps start again.
    """
    if is_search(list(events)):
        raise ValueError(
            "plot_history: these are a search's events, whose members change trials; draw them "
            "by setting: group_by=['params_lr', ...] (the trials' parameters)"
        )
    ensembles = [e for e in events if "hparams" in e or "model" in e]
    if len(ensembles) != len(events):
        return
    streams = split_streams(list(events), func="plot_history")
    if len(streams) > 1:
        raise ValueError(
            f"plot_history: the history joins {len(streams)} streams (a new one starts at "
            f"record {streams[1][0]}, where the steps start again or the members change); "
            "draw it by setting with group_by=..., or each stream with its own call on one "
            "axis (ax=)"
        )


def _draw_settings(
    history: Any, names: tuple[str, ...] | None, by: tuple[str, ...] | None, *, ax: Any,
    path: Path | None, figsize: Any, dpi: Any, title: str | None, ylim: object,
) -> Figure:  # fmt: skip
    """A study's (or named histories') mean curve and band per setting, in one panel."""
    from matplotlib.figure import Figure

    kind = "a study" if is_study(history) else "a dict of named histories"
    if by is None:
        raise TypeError(f"plot_history: {kind} is drawn by setting; pass group_by=...")
    if names is None:
        key = study_key(history) if is_study(history) else None
        if key is None:
            raise TypeError(f"plot_history: name the keys to draw of {kind}: keys=...")
        names = (key,)
    if ax is None:
        ax = Figure(figsize=figsize or _curves.DEFAULT_FIGSIZE, dpi=dpi or 100,
                    layout="constrained").subplots()  # fmt: skip
    mode = study_mode(history) if is_study(history) else None
    drawn = _bands.draw_groups(ax, history, names, by, func="plot_history", mode=mode)
    _drawing.finish_axes(ax, {}, xlabel="epoch", title=title)
    set_ylim(ax, ylim, drawn)
    figure = _curves.figure_of(ax)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi if dpi is None else dpi)
    return figure


def plot_history(
    history: Any,
    keys: str | Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    save: str | os.PathLike[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    title: str | None = None,
    group_by: str | Sequence[str] | None = None,
    ylim: tuple[float, float] | str | None = None,
) -> Figure:
    """Draw the curves of a run against each event's ``step`` (the epoch) and return the figure.

    With no ``keys``, every metric the events hold is drawn (numbers and per-member lists;
    not ``step``, ``global_step``, ``lr``, timings such as ``train_time_sec``, bools). Metrics of
    different scales get separate panels: keys are grouped by their name once the split is
    removed, so ``train_loss`` and ``val_loss`` share the ``loss`` panel and ``train_acc``
    and ``val_acc`` the ``acc`` one. The x-axis is labelled ``epoch``. An ensemble's
    per-member values (lists of K numbers) are drawn as one thin curve per member: for up to
    10 members whose hyperparameters differ, one colour per member and a legend that names
    each by what tells it apart (``lr=0.01,fold=2``), else one colour per key. ``group_by``
    draws a mean curve and a ±1 std band per setting instead.

    ``history`` is any record of a run:

    * a list (or any iterable) of event dicts, e.g. what :func:`fitstream.collect` returns;
    * a path to a JSONL file written by :func:`fitstream.collect_jsonl` (one JSON object per
      line; ``NaN``, ``Infinity`` and ``null`` are read as gaps);
    * a pandas DataFrame, e.g. from :func:`fitstream.collect_pd` (pandas itself is not
      needed for the other two forms). A ``step`` index counts as the ``step`` column;
    * with ``group_by``, also what :func:`fitstream.summarize` reads: a search's events, an
      Optuna study filled by :func:`fitstream.search` (its key by default), several
      ensembles' histories joined in one list, or a dict ``{name: history}`` (each member's
      hyperparameter ``stream`` is its history's name).

    Without ``group_by``, each member is one line through the events, so a search's events,
    or several streams joined in one list (the steps start again, the members change), are
    refused, saying how to draw them.

    A value that is missing from an event, ``None``, NaN, infinite or not a number leaves a gap
    in its curve (NaN in the plotted data): it is never an error. A point with no neighbour to
    join, such as a validation metric computed every fifth epoch, is drawn as a dot. When no
    event has a ``step``, the x-axis is the event's position (1, 2, ...).

    Args:
        history: The events, a JSONL path, or a DataFrame.
        keys: One event name or a sequence of names, e.g. ``("train_loss", "val_loss")``;
            ``None`` draws every metric found.
        ax: Draw into this existing matplotlib Axes (e.g. one panel of a grid) instead of a
            new figure, adding to what it shows (call it again with another run's history
            to compare runs on one chart); all keys go into that one Axes and the Axes'
            figure is returned.
        save: Write the figure to this path, creating missing folders. PNG unless the suffix
            names another format matplotlib writes (``.svg``, ``.pdf``).
        figsize: ``(width, height)`` of a new figure in inches; ``(6.4, 4.0)`` when ``None``,
            4.8 inches wide per panel when there are several. The saved PNG is
            ``figsize * dpi`` pixels, 640 x 400 by default.
        dpi: Pixels per inch of a new figure (100 when ``None``) and of the saved file (the
            figure's own dpi when ``None``).
        title: A title, e.g. the run's name: of the Axes with one panel, of the figure with
            several. ``None`` with a JSONL path uses the file's name without its suffix.
        group_by: For an ensemble's history: a hyperparameter name (or a list of names) whose
            values group the members, such as ``"lr"`` for folds of several learning rates.
            Each group is drawn as its mean curve with a shaded band of one standard
            deviation (``ddof=0``) either side, one colour per group; the legend names the
            group's values and its member count. As in :func:`fitstream.summarize`, a member
            frozen early keeps its last value. A setting keeps its colour on one Axes across
            calls (``ax=``), so histories drawn one after the other never give two settings one
            colour. A dot marks each setting's best epoch (by the key's direction), the epoch
            :func:`fitstream.summarize` reports as its ``best_step``.
        ylim: The y-range of each panel: ``None`` (the default) shows where the curves settle
            when their first epochs would squash the rest (a first loss of 2.3, an accuracy
            of 0.15 at epoch 1, leaving the last epochs a few pixels tall): the first quarter
            of the epochs is left out of the range then; ``"full"`` shows every point;
            ``(low, high)`` sets it.

    Returns:
        The :class:`matplotlib.figure.Figure` (in a notebook it displays itself when it is
        the cell's last expression).

    Raises:
        TypeError: ``history`` is none of the three forms, ``keys`` holds a non-string, or
            ``ax`` is not a matplotlib Axes.
        ValueError: ``history`` is empty, a JSONL line is not a JSON object, only some
            events have a ``step``, ``keys`` is empty, or ``figsize``/``dpi`` are not
            positive (or ``figsize`` is given together with ``ax``); without ``group_by``, a
            search's events or several streams joined in one list.
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
        >>> fig.axes[0].get_lines()[1].get_ydata().tolist(), fig.axes[0].get_xlabel()
        ([1.0, nan, nan], 'epoch')
        >>> history[0]["val_acc"] = 0.5
        >>> [ax.get_title() for ax in plot_history(history, title="run 1").axes]
        ['loss', 'acc']
    """
    names = _check_arguments(keys, ax=ax, figsize=figsize, dpi=dpi, title=title)
    by = _bands.check_group_by(group_by, func="plot_history")
    check_ylim(ylim, func="plot_history")
    require("matplotlib", "plot", feature="plot_history")
    from matplotlib.figure import Figure

    _curves.check_ax(ax, figsize, func="plot_history")
    path = _curves.check_save(save, func="plot_history")

    if _by_setting_only(history):
        return _draw_settings(history, names, by, ax=ax, path=path, figsize=figsize, dpi=dpi,
                              title=title, ylim=ylim)  # fmt: skip
    events = _curves.read_history(history, func="plot_history")
    if by is None:
        _check_one_stream(events)
    elif not any("hparams" in e or "trial" in e or ensemble_of(e) is not None for e in events):
        raise ValueError(
            "plot_history: group_by groups an ensemble's members by their hyperparameters, but "
            "this history is a single model's: its events have no members' 'hparams'; leave "
            "group_by out, or plot an ensemble_stream's history (collect() keeps its hparams)"
        )
    if title is None and isinstance(history, str | os.PathLike):
        title = Path(history).stem  # the run's name
    present = {key for event in events for key in event}
    if names is None:
        names = tuple(_panels.found_metrics(events))
        if not names:
            raise KeyError(
                f"plot_history: the events hold no metric to plot (numbers or per-member "
                f"lists); they have {sorted(present)}"
            )
    absent = [key for key in names if key not in present]
    if absent:
        raise KeyError(
            f"plot_history: no event has the key(s) {absent}; the events have {sorted(present)}"
        )

    x, xlabel = _x_axis(events)
    columns = _curves.columns_of(events, names)
    labels = _drawing.member_names(events)

    groups = [list(names)] if ax is not None else _panels.panels(names)
    if ax is None:
        size = figsize or (
            _curves.DEFAULT_FIGSIZE if len(groups) == 1 else (4.8 * len(groups), 3.8)
        )
        new = Figure(figsize=size, dpi=dpi or 100, layout="constrained")
        axes = list(new.subplots(1, len(groups), squeeze=False)[0])
    else:
        axes = [ax]
    source = history if hasattr(history, "columns") else events
    for panel, group in zip(axes, groups, strict=True):
        shown = {key: columns[key] for key in group}
        panel_title = title if len(groups) == 1 else _panels.panel_title(group)
        _draw_panel(panel, shown, group, by, source=source, x=x, xlabel=xlabel,
                    title=panel_title, names=labels, ylim=ylim)  # fmt: skip
        if ax is None and len(group) > 1:
            panel.set_ylabel(_panels.panel_title(group))
    # An Axes of a SubFigure belongs to a SubFigure: save and return the whole figure.
    figure = _curves.figure_of(axes[0])
    if len(groups) > 1 and title is not None:
        figure.suptitle(title)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi if dpi is None else dpi)
    return figure
