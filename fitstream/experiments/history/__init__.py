"""Histories read member by member: what ``summarize`` and grouped plots compare.

:func:`member_curves` turns any history into one :class:`Curve` per member (its
hyperparameters and its value of one key at each step): an ensemble's events or records (one
stream, or several joined: :mod:`.streams`), a search's events (:mod:`.searches`), an Optuna
study filled by a search (:mod:`.studies`), or a dict naming several histories.
"""

from collections.abc import Mapping
from typing import Any

from .curves import Curve, check_names, group_curves, number
from .searches import is_search, search_curves
from .streams import STREAM, history_records, split_streams, stream_curves
from .studies import is_study, study_curves, study_key, study_mode, study_params

__all__ = [
    "STREAM",
    "Curve",
    "check_names",
    "group_curves",
    "is_history",
    "is_study",
    "member_curves",
    "named_histories",
    "number",
    "study_key",
    "study_mode",
    "study_params",
]


def member_curves(history: object, key: str, *, func: str) -> list[Curve]:
    """One :class:`Curve` of ``key`` per member of ``history``, in order.

    Raises:
        KeyError: No record has ``key`` (the message lists the keys they have).
        ValueError: The history is empty or not an ensemble's, or a record's ``key`` is not a
            list of one value per member.
        TypeError: A member's value is a string.
    """
    if is_study(history):
        return study_curves(history, key, func=func)
    named = named_histories(history)
    if named is not None:
        curves: list[Curve] = []
        for name, part in named.items():
            for curve in member_curves(part, key, func=func):
                hparams = {**curve.hparams, STREAM: name}
                curves.append(Curve(len(curves), hparams, curve.steps, curve.values))
        return curves
    records = history_records(history, func=func)
    if not any(key in record for record in records):
        keys = sorted({k for record in records for k in record})
        raise KeyError(f"{func}: no record of the history has the key {key!r}; they have {keys}")
    if is_search(records):
        return search_curves(records, key, func=func)
    curves = []
    for start, part in split_streams(records, func=func):
        if any(key in record for record in part):
            curves += stream_curves(part, key, first=len(curves), start=start, func=func)
    return curves


def is_history(value: object) -> bool:
    """Whether ``value`` looks like one history: records, a frame or a study (not a value)."""
    if is_study(value) or (hasattr(value, "columns") and hasattr(value, "to_dict")):
        return True
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], Mapping)


def named_histories(history: object) -> Mapping[str, Any] | None:
    """A dict of named histories ``{name: history}`` (not an event dict), else None."""
    if not isinstance(history, Mapping) or not history:
        return None
    if all(isinstance(name, str) and is_history(part) for name, part in history.items()):
        return history
    return None
