"""The y-range of a :func:`fitstream.plot_history` panel: where its curves settle, or as given."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["check_ylim", "flat", "set_ylim", "settled_range"]


def settled_range(ys: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """The y-range where the curves settle, when their first points would squash it; else None.

    Each curve is a list of values, one per epoch. Left out is the first quarter of the epochs
    (at least one, when there are 5 or more): a first epoch's loss of 2.3, or accuracy of 0.15,
    would otherwise leave the last epochs, where the settings differ, a few pixels tall; a
    slow setting's curve comes in from the edge instead. Only when what is left spans less
    than half the whole range; 5 % of it is added either side.

    Example:
        >>> settled_range([[0.15, 0.90, 0.95, 0.96, 0.97, 0.97]])
        (0.949, 0.971)
        >>> settled_range([[0.5, 0.6, 0.7, 0.8, 0.9]]) is None
        True
    """
    longest = max((len(y) for y in ys), default=0)
    if longest < 5:
        return None
    skip = max(1, round(0.25 * longest))
    every = [v for y in ys for v in y if math.isfinite(v)]
    later = [v for y in ys for v in y[skip:] if math.isfinite(v)]
    if not every or not later:
        return None
    low, high = min(later), max(later)
    if high - low >= 0.5 * (max(every) - min(every)):
        return None
    pad = 0.05 * (high - low) if high > low else 0.05 * max(abs(high), 1e-12)
    return round(low - pad, 12), round(high + pad, 12)


def check_ylim(ylim: object, *, func: str) -> None:
    """Check ``plot_history``'s ``ylim``: None, ``"full"`` or a ``(low, high)`` pair."""
    if ylim is None or ylim == "full":
        return
    ok = (
        isinstance(ylim, tuple | list)
        and len(ylim) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in ylim)
        and ylim[0] < ylim[1]
    )
    if not ok:
        raise ValueError(
            f"{func}: 'ylim' must be None (where the curves settle), 'full' or a (low, high) "
            f"pair of numbers with low < high, got {ylim!r:.60}"
        )


def set_ylim(ax: Any, ylim: object, curves: Sequence[Sequence[float]]) -> None:
    """Apply ``ylim`` to ``ax``: as given, or where ``curves`` settle (see plot_history)."""
    if ylim == "full":
        return
    if ylim is None:
        settled = settled_range(curves)
        if settled is not None:
            ax.set_ylim(*settled)
        return
    pair: Sequence[float] = ylim  # type: ignore[assignment]  # checked at the call
    ax.set_ylim(float(pair[0]), float(pair[1]))


def flat(columns: Any) -> list[list[float]]:
    """The y-lists of a panel's columns: a key's list, or its members' lists."""
    out: list[list[float]] = []
    for column in columns.values():
        out += column if column and isinstance(column[0], list) else [column]
    return out
