"""What :func:`fitstream.plot_history` and :func:`fitstream.live_plot` share.

Checking their arguments, reading a history (events, a JSONL file, a DataFrame), and turning
event values into y-values where anything missing or non-finite becomes NaN (a gap in the
curve). Drawing is in :mod:`._drawing`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._internal.checks import check_strings, describe
from .._internal.frames import frame_records, is_member_frame
from .._internal.members import is_per_member
from .._internal.paths import check_file_target
from .._internal.values import scalar_value
from ._json import decode_non_finite

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "check_ax",
    "check_figsize",
    "check_keys",
    "check_save",
    "columns_of",
    "figure_of",
    "kept_value",
    "read_history",
    "x_value",
    "y_value",
]

DEFAULT_FIGSIZE = (6.4, 4.0)


def check_keys(keys: object, *, func: str) -> tuple[str, ...]:
    """Return ``keys`` (a string or a sequence of strings) as a non-empty tuple of strings.

    Example:
        >>> check_keys("loss", func="f"), check_keys(["a", "b"], func="f")
        (('loss',), ('a', 'b'))
        >>> check_keys([], func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: keys must name at least one event value, e.g. 'train_loss', got []
    """
    if isinstance(keys, str):
        return (keys,)
    if not isinstance(keys, Sequence):
        raise TypeError(
            f"{func}: keys must be a string or a sequence of strings, "
            f"got {type(keys).__name__}: {keys!r:.60}"
        )
    check_strings(keys, func=func, arg="keys")
    if not keys:
        raise ValueError(
            f"{func}: keys must name at least one event value, e.g. 'train_loss', got {keys!r}"
        )
    return tuple(keys)


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def check_figsize(figsize: object, dpi: object, *, func: str) -> None:
    """Refuse a figure size that is not two positive numbers, or a dpi that is not positive.

    Example:
        >>> check_figsize((4, 3), 100, func="f")
        >>> check_figsize((4, 0), 100, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: figsize must be (width, height) in inches, two positive numbers, ...
    """
    if figsize is not None:
        valid = (
            isinstance(figsize, Sequence)
            and not isinstance(figsize, str)
            and len(figsize) == 2
            and all(_positive_number(v) for v in figsize)
        )
        if not valid:
            raise ValueError(
                f"{func}: figsize must be (width, height) in inches, two positive numbers, "
                f"got {figsize!r:.60}"
            )
    if not _positive_number(dpi):
        raise ValueError(f"{func}: dpi must be a positive number, got {dpi!r:.60}")


def check_save(save: object, *, func: str) -> Path | None:
    """Return ``save`` as a Path after checking a file can be written there (None stays None).

    Example:
        >>> check_save("plots/loss.png", func="f")
        PosixPath('plots/loss.png')
        >>> check_save(3, func="f")
        Traceback (most recent call last):
        ...
        TypeError: f: save must be a file path (str or os.PathLike) or None, got int: 3
    """
    if save is None:
        return None
    if not isinstance(save, str | os.PathLike):
        raise TypeError(
            f"{func}: save must be a file path (str or os.PathLike) or None, got {describe(save)}"
        )
    path = Path(save)
    check_file_target(path, func=func, arg="save")
    return path


def check_ax(ax: object, figsize: object, *, func: str) -> None:
    """Refuse an ``ax`` that is not a matplotlib Axes, or one given together with ``figsize``.

    Example:
        >>> check_ax("left", None, func="f")
        Traceback (most recent call last):
        ...
        TypeError: f: ax must be a matplotlib Axes (e.g. fig.add_subplot()) or None, got ...
    """
    if ax is None:
        return
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(
            f"{func}: ax must be a matplotlib Axes (e.g. fig.add_subplot()) or None, got "
            f"{describe(ax)}"
        )
    if figsize is not None:
        raise ValueError(
            f"{func}: figsize applies to a new figure; with ax= the size is that of "
            "ax.figure (set it with ax.figure.set_size_inches)"
        )


def figure_of(ax: Axes) -> Figure:
    """The top-level figure of ``ax`` (an Axes of a SubFigure belongs to a SubFigure)."""
    from matplotlib.figure import Figure

    parent = ax.figure
    return parent if isinstance(parent, Figure) else parent.figure


def _read_jsonl(path: Path, *, func: str) -> list[Mapping[str, Any]]:
    events: list[Mapping[str, Any]] = []
    if not path.is_file():
        raise FileNotFoundError(
            f"{func}: history {str(path)!r} is not a file; pass the path of a JSONL file "
            f"written by collect_jsonl, a list of events or a DataFrame"
        )
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)  # also reads bare NaN/Infinity, as 0.5 wrote them
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{func}: line {number} of {str(path)!r} is not valid JSON ({exc.msg}): "
                    f"{line.strip()!r:.80}"
                ) from None
            if not isinstance(event, dict):
                raise ValueError(
                    f"{func}: line {number} of {str(path)!r} must be a JSON object (one event), "
                    f"got {type(event).__name__}: {line.strip()!r:.80}"
                )
            events.append({key: decode_non_finite(value) for key, value in event.items()})
    return events


def read_history(history: object, *, func: str) -> list[Mapping[str, Any]]:
    """Return the events of ``history``: event dicts, a JSONL path, or a pandas DataFrame.

    A DataFrame is recognised by its ``to_dict`` and ``columns`` (pandas is never imported);
    when ``step`` is its index rather than a column, the index becomes the ``step`` column.
    An ensemble's tidy frame (:func:`fitstream.collect_pd`'s, with a ``member`` column) is read
    back as the records :func:`fitstream.collect` keeps: per-member lists and ``hparams``.

    Example:
        >>> read_history([{"step": 1, "loss": 0.5}], func="f")
        [{'step': 1, 'loss': 0.5}]
        >>> read_history([], func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: history is empty; there is nothing to plot
    """
    if isinstance(history, str | os.PathLike):
        events = _read_jsonl(Path(history), func=func)
        source = f"the file {os.fspath(history)!r}"
    elif is_member_frame(history):  # an ensemble's tidy frame: one curve per member
        events = frame_records(history, func=func)
        source = "the DataFrame"
    elif hasattr(history, "to_dict") and hasattr(history, "columns"):
        frame: Any = history
        if "step" not in frame.columns and getattr(frame.index, "name", None) == "step":
            frame = frame.reset_index()
        events = frame.to_dict(orient="records")
        source = "the DataFrame"
    elif isinstance(history, Mapping) or not isinstance(history, Iterable):
        raise TypeError(
            f"{func}: history must be a list of event dicts, a path to a JSONL file or a "
            f"pandas DataFrame, got {type(history).__name__}: {history!r:.60}"
        )
    else:
        events = list(history)
        source = "history"
        for position, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise TypeError(
                    f"{func}: history must hold event dicts, got {type(event).__name__} at "
                    f"position {position}: {event!r:.60}"
                )
    if not events:
        raise ValueError(f"{func}: {source} is empty; there is nothing to plot")
    return events


def y_value(value: object) -> float:
    """Return ``value`` as a float, or NaN (a gap) when it is missing, non-finite or no number.

    Example:
        >>> y_value(0.5), y_value(None), y_value(float("inf")), y_value("text")
        (0.5, nan, nan, nan)
    """
    number = scalar_value(value)
    if number is None or not math.isfinite(number):
        return math.nan
    return float(number)


def x_value(event: Mapping[str, Any]) -> float | None:
    """Return the event's ``step`` as a float, or ``None`` when it has no numeric step.

    Example:
        >>> x_value({"step": 3}), x_value({"loss": 1.0})
        (3.0, None)
    """
    step = scalar_value(event.get("step"))
    if step is None or isinstance(step, bool) or not math.isfinite(step):
        return None
    return float(step)


def columns_of(events: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Return each key's y-values: a list of floats, or for per-member values a list per member.

    Example:
        >>> columns_of([{"a": 1.0, "b": [0.5, 0.25]}, {"a": 2.0}], ["a", "b"])
        {'a': [1.0, 2.0], 'b': [[0.5, nan], [0.25, nan]]}
    """
    columns: dict[str, Any] = {}
    for key in keys:
        values = [event.get(key) for event in events]
        lists = [v if isinstance(v, list) and is_per_member(v) else None for v in values]
        size = max((len(v) for v in lists if v is not None), default=0)
        if not size:
            columns[key] = [y_value(v) for v in values]
            continue
        columns[key] = [
            [y_value(v[k]) if v is not None and k < len(v) else math.nan for v in lists]
            for k in range(size)
        ]
    return columns


def kept_value(value: object) -> float | list[float]:
    """What a live plot keeps of an event's value: its y-value, or a copy of K members' values.

    Example:
        >>> kept_value(0.5), kept_value([0.5, 0.25]), kept_value("x")
        (0.5, [0.5, 0.25], nan)
    """
    if isinstance(value, list) and is_per_member(value):
        return [float(v) for v in value]
    return y_value(value)
