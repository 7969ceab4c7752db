"""An ensemble's history read member by member: what ``summarize`` and grouped plots compare.

A history is what :func:`~fitstream.collect` keeps of an ensemble's events (one record per
epoch, per-member lists, and the members' ``hparams``), the same read back from a JSON Lines
file, the live events themselves, or the tidy frame of :func:`~fitstream.collect_pd` (one row
per epoch and member, whose hyperparameters are the columns that hold one value per member
over the run). :func:`member_curves` turns any of them into one :class:`Curve` per
member: its hyperparameters and its value of one key at each step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._internal.checks import check_name, check_strings, describe
from .._internal.frames import frame_records
from .._internal.members import ensemble_of

__all__ = ["Curve", "check_names", "group_curves", "member_curves"]


@dataclass(frozen=True)
class Curve:
    """One member's values of a key: ``values[i]`` at ``steps[i]``, and its hyperparameters."""

    member: int
    hparams: Mapping[str, Any]
    steps: list[float]
    values: list[float]


def _number(value: object) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _records(history: object, *, func: str) -> list[Mapping[str, Any]]:
    if type(history).__name__ == "DataFrame" and hasattr(history, "columns"):
        return frame_records(history, func=func)
    if isinstance(history, str | bytes | Mapping) or not isinstance(history, Iterable):
        raise TypeError(
            f"{func}: 'history' must be an ensemble's history: a list of events or records "
            f"(what collect() returns) or collect_pd's DataFrame, got {describe(history)}"
        )
    records = list(history)
    if not records:
        raise ValueError(f"{func}: 'history' is empty; collect at least one epoch")
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"{func}: history[{i}] must be an event dict, got {describe(record)}")
    return records


def _hparams_of(record: Mapping[str, Any], *, func: str) -> list[Mapping[str, Any]]:
    ensemble = ensemble_of(record)
    if ensemble is not None:
        return [dict(h) for h in ensemble.hparams]
    hparams = record.get("hparams")
    if not isinstance(hparams, list) or not all(isinstance(h, Mapping) for h in hparams):
        raise ValueError(
            f"{func}: the history's records have no members' 'hparams' (collect() keeps them "
            "for an ensemble_stream's events); summarize compares the members of an ensemble"
        )
    return hparams


def member_curves(history: object, key: str, *, func: str) -> list[Curve]:
    """One :class:`Curve` of ``key`` per member, in member order.

    Records without ``key`` (an epoch without validation) give no point. A member frozen
    early (its record's ``active`` entry false, as :func:`~fitstream.collect` keeps it) keeps
    the value it had at the first record that shows it stopped; a ``None`` entry also carries
    the member's previous value. The members' hyperparameters are those of the first record.

    Raises:
        KeyError: No record has ``key`` (the message lists the keys they have).
        ValueError: The history is empty or not an ensemble's, or a record's ``key`` is not
            a list of one value per member.
    """
    records = _records(history, func=func)
    if not any(key in record for record in records):
        keys = sorted({k for record in records for k in record})
        raise KeyError(f"{func}: no record of the history has the key {key!r}; they have {keys}")
    hparams = _hparams_of(records[0], func=func)
    count = len(hparams)
    steps: list[float] = []
    columns: list[list[float]] = [[] for _ in range(count)]
    stopped = [False] * count
    for position, record in enumerate(records, start=1):
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value, list) or len(value) != count:
            raise ValueError(
                f"{func}: record {position - 1}'s {key!r} must be a list of one value per "
                f"member ({count}), got {describe(value)}"
            )
        active = record.get("active")
        steps.append(_number(record.get("step", position)))
        for k, entry in enumerate(value):
            column = columns[k]
            if (stopped[k] or entry is None) and column:
                column.append(column[-1])
            else:
                column.append(_number(entry))
            if isinstance(active, list) and len(active) == count and active[k] is False:
                stopped[k] = True
    return [Curve(k, hparams[k], steps, column) for k, column in enumerate(columns)]


def check_names(names: object, *, func: str, arg: str) -> tuple[str, ...]:
    """The hyperparameter names to group by: one name, or a non-empty list of names.

    Example:
        >>> check_names("lr", func="f", arg="by"), check_names(["lr", "width"], func="f", arg="by")
        (('lr',), ('lr', 'width'))
    """
    if isinstance(names, str):
        check_name(names, func=func, what=f"'{arg}'")
        return (names,)
    if not isinstance(names, list | tuple) or not names:
        raise TypeError(
            f"{func}: '{arg}' must be a hyperparameter name or a non-empty list of names (such "
            f"as 'lr' or ['lr', 'width']), got {describe(names)}"
        )
    check_strings(names, func=func, arg=arg)
    return tuple(names)


def group_curves(
    curves: Sequence[Curve], by: Sequence[str], *, func: str
) -> dict[tuple[Any, ...], list[Curve]]:
    """The curves grouped by the values of the hyperparameters ``by``, in first-seen order.

    Raises:
        KeyError: A name in ``by`` is not a hyperparameter of every member (the message
            lists those the members have).
    """
    have = set(curves[0].hparams)
    for curve in curves[1:]:
        have &= set(curve.hparams)
    missing = [name for name in by if name not in have]
    if missing:
        raise KeyError(
            f"{func}: 'by' names {missing}, which not every member has as a hyperparameter; "
            f"the members have {sorted(have)}"
        )
    groups: dict[tuple[Any, ...], list[Curve]] = {}
    for curve in curves:
        groups.setdefault(tuple(curve.hparams[name] for name in by), []).append(curve)
    return groups
