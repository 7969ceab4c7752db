"""Drawing a run's curves into a matplotlib Axes: one line per key, or per ensemble member.

:func:`draw` is shared by :func:`fitstream.plot_history` and :func:`fitstream.live_plot`. An
ensemble's per-member values are one thin curve per member: for up to ten members that their
hyperparameters tell apart, one colour and one legend entry each (``val_loss lr=0.01``), else
one colour per key and the key named once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._internal.members import ensemble_of, member_labels

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw", "finish_axes", "member_names"]


_NAMED_MEMBERS = 10  # up to this many members get a colour and a legend entry each
_STYLES = ("-", "--", ":", "-.")


def member_names(events: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The members' names (by what tells them apart) from the first event that tells them.

    ``None`` for a single model's history, or when no hyperparameter differs.

    Example:
        >>> member_names([{"step": 1, "hparams": [{"lr": 0.1}, {"lr": 0.01}]}])
        ['lr=0.1', 'lr=0.01']
    """
    for event in events:
        ensemble = ensemble_of(event)
        hparams = event.get("hparams") if ensemble is None else list(ensemble.hparams)
        if isinstance(hparams, list) and hparams and all(isinstance(h, Mapping) for h in hparams):
            names = member_labels(hparams, lambda k: "")
            return names if all(names) else None
    return None


def _draw_members(
    ax: Axes,
    x: Sequence[float],
    key: str,
    members: list[list[float]],
    *,
    names: Sequence[str] | None,
    position: int,
) -> None:
    """One thin curve per member, coloured and named per member when they are few.

    Members that cannot be told apart, or more than ten, are drawn in the key's colour, with
    the key named once.
    """
    named = names is not None and len(names) == len(members) <= _NAMED_MEMBERS
    colour = None
    for k, ys in enumerate(members):
        marker = "." if _has_isolated_point(ys) else "None"
        if named:
            assert names is not None
            ax.plot(
                list(x),
                ys,
                label=f"{key} {names[k]}",
                marker=marker,
                color=f"C{k}",
                linestyle=_STYLES[position % len(_STYLES)],
                linewidth=1,
            )
            continue
        label = f"{key} ({len(members)} members)" if k == 0 else "_nolegend_"
        (line,) = ax.plot(
            list(x), ys, label=label, marker=marker, color=colour, alpha=0.6, linewidth=1
        )
        colour = line.get_color()


def _has_isolated_point(ys: Sequence[float]) -> bool:
    """Tell whether some finite value has no finite neighbour (a line alone would hide it)."""
    finite = [not math.isnan(y) for y in ys]
    for i, here in enumerate(finite):
        before = i > 0 and finite[i - 1]
        after = i + 1 < len(finite) and finite[i + 1]
        if here and not before and not after:
            return True
    return False


def draw(
    ax: Axes,
    x: Sequence[float],
    columns: Mapping[str, Sequence[Any]],
    *,
    xlabel: str,
    title: str | None,
    clear: bool = True,
    names: Sequence[str] | None = None,
) -> None:
    """Draw one curve per column against ``x`` (clearing ``ax`` first); NaN values leave gaps.

    With ``clear=False`` the curves are added to what ``ax`` already shows.

    A curve with a point that has no finite neighbour is drawn with dot markers so the point
    shows; a key without any finite value keeps its legend entry, marked ``(no values)``.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw(ax, [1, 2, 3], {"loss": [0.5, float("nan"), 0.25]}, xlabel="step", title=None)
        >>> ax.get_lines()[0].get_label(), ax.get_lines()[0].get_marker()
        ('loss', '.')
    """
    if clear:
        ax.clear()
    for position, (key, ys) in enumerate(columns.items()):
        if ys and isinstance(ys[0], list):  # per member: one curve each
            _draw_members(ax, x, key, list(ys), names=names, position=position)
            continue
        label = key if any(not math.isnan(y) for y in ys) else f"{key} (no values)"
        marker = "." if _has_isolated_point(ys) else "None"
        ax.plot(list(x), list(ys), label=label, marker=marker)
    finish_axes(ax, columns, xlabel=xlabel, title=title)


def finish_axes(ax: Axes, columns: Mapping[str, Any], *, xlabel: str, title: str | None) -> None:
    """Label, title, grid and legend of a panel once its curves are drawn."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    if xlabel in ("epoch", "event"):  # whole numbers: no tick at epoch 2.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(columns) == 1:
        ax.set_ylabel(next(iter(columns)))
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
