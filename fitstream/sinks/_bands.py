"""Grouped curves for :func:`fitstream.plot_history`: a mean curve per setting, a ±1 std band.

An ensemble's members that share the values of ``group_by`` (the folds of one learning rate)
are drawn as one curve, their mean at each epoch, over a shaded band of one standard
deviation either side (``ddof=0``, as :func:`fitstream.summarize` reports it). A member frozen
early keeps its last value, as in ``summarize``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._internal.direction import infer_mode
from ..experiments.history import check_names, group_curves, member_curves
from ..experiments.summary import mean_and_std

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["check_group_by", "colour_of", "draw_groups", "group_label"]

_STYLES = ("-", "--", ":", "-.")
_COLOURS = "_fitstream_setting_colours"  # on an Axes: each setting's colour there


def check_group_by(group_by: object, *, func: str) -> tuple[str, ...] | None:
    """``None``, or the hyperparameter names to group by (as :func:`fitstream.summarize`'s ``by``).

    Example:
        >>> check_group_by("lr", func="f"), check_group_by(None, func="f")
        (('lr',), None)
    """
    return None if group_by is None else check_names(group_by, func=func, arg="group_by")


def group_label(by: Sequence[str], values: Sequence[Any]) -> str:
    """The legend's name of a group: ``lr=0.01`` or ``lr=0.01,width=32``.

    Example:
        >>> group_label(["lr", "width"], [0.01, 32])
        'lr=0.01,width=32'
    """
    shown = (format(v, "g") if isinstance(v, float) else str(v) for v in values)
    return ",".join(f"{name}={value}" for name, value in zip(by, shown, strict=True))


def colour_of(ax: Axes, setting: str) -> str:
    """The colour of ``setting`` on ``ax``: the one it had in an earlier call, else the next.

    Several ``plot_history(..., group_by=..., ax=ax)`` calls on one axis (one per width, say)
    keep one colour per setting, never two settings in one colour (up to ten settings).

    Example:
        >>> from types import SimpleNamespace
        >>> ax = SimpleNamespace()
        >>> colour_of(ax, "lr=0.1"), colour_of(ax, "lr=0.01"), colour_of(ax, "lr=0.1")
        ('C0', 'C1', 'C0')
    """
    colours: dict[str, str] = ax.__dict__.setdefault(_COLOURS, {})
    if setting not in colours:
        colours[setting] = f"C{len(colours) % 10}"
    return colours[setting]


def draw_groups(
    ax: Axes, history: Any, keys: Sequence[str], by: Sequence[str], *, func: str,
    mode: str | None = None,
) -> list[list[float]]:  # fmt: skip
    """Draw each key's mean curve per group with its ±1 std band; one colour per setting.

    Each setting's best epoch (by ``mode``, else the key's inferred direction) is marked with a
    dot on its curve. Returns the bands' edges and means, for the y-range.
    """
    drawn: list[list[float]] = []
    for position, key in enumerate(keys):
        groups = group_curves(member_curves(history, key, func=func), by, func=func,
                              arg="group_by")  # fmt: skip
        style = _STYLES[position % len(_STYLES)]
        for values, curves in groups.items():
            x = sorted({step for c in curves for step in c.steps})  # a pruned trial stops early
            stats = [
                mean_and_std([c.values[c.steps.index(step)] for c in curves if step in c.steps])
                for step in x
            ]
            mean = [m for m, _ in stats]
            low = [m - s for m, s in stats]
            high = [m + s for m, s in stats]
            colour = colour_of(ax, group_label(by, values))
            label = f"{key} {group_label(by, values)} (n={len(curves)})"
            marker = "." if len(x) == 1 or all(math.isnan(v) for v in mean[1:]) else "None"
            ax.plot(x, mean, label=label, color=colour, linestyle=style, marker=marker)
            # an explicit where: the band has gaps at NaN (and matplotlib 3.6 needs one for lists)
            where = [math.isfinite(a) and math.isfinite(b) for a, b in zip(low, high, strict=True)]
            ax.fill_between(x, low, high, where=where, color=colour, alpha=0.2, linewidth=0)
            best = _best_point(mean, mode or infer_mode(key))
            if best is not None:  # the setting's best epoch, as summarize reports it
                ax.scatter([x[best]], [mean[best]], color=colour, s=25, zorder=3,
                           label="_best_step")  # fmt: skip
            drawn += [low, mean, high]
    return drawn


def _best_point(values: Sequence[float], mode: str | None) -> int | None:
    """The position of the first best finite value, or None (no direction, or no value)."""
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if mode is None or not finite:
        return None
    pick = min if mode == "min" else max
    best = pick(values[i] for i in finite)
    return next(i for i in finite if values[i] == best)
