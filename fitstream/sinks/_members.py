"""One row per (event, member): how the table sinks spread an ensemble's event out.

An ensemble's event holds per-member lists (``val_loss == [0.31, 0.29, 0.40]``). A table
wants one row per member instead, each with the member's own value, its index under
``member`` and its hyperparameters (read from the ensemble now, before a sink drops the
model), while the values shared by all members (``step``, ``train_time_sec``) repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._internal.members import ensemble_of, is_per_member
from .._internal.values import is_live_object

__all__ = [
    "ACTIVE_KEY",
    "MEMBER_KEY",
    "Recorded",
    "event_active",
    "member_rows",
    "recorded_ensemble",
    "rows_by_member",
]

MEMBER_KEY = "member"
"""The column that holds a row's member index."""

ACTIVE_KEY = "active"
"""The event key (a list of K bools) and column telling whether a member trained that epoch."""


def event_active(event: Mapping[str, Any], ensemble: Any) -> list[bool]:
    """Whether each member trained in the event's epoch: the event's ``active`` list.

    An event without one (a stage's own, a replayed one) falls back to the ensemble's state
    now.

    Example:
        >>> event_active({"active": [True, False]}, None)
        [True, False]
    """
    active = event.get(ACTIVE_KEY)
    if (
        isinstance(active, list | tuple)
        and all(isinstance(a, bool) for a in active)
        and (ensemble is None or len(active) == len(ensemble))
    ):
        return list(active)
    return [bool(a) for a in ensemble.active]


def member_rows(event: Mapping[str, Any], *, caller: str) -> list[dict[str, Any]] | None:
    """Spread an ensemble's event into one row per member; ``None`` for a single model's.

    In each row ``step`` comes first, then ``member`` and the member's hyperparameters, then
    the event's other keys: a per-member list of K values gives the member's entry, anything
    else (a scalar, a list of another length) is repeated; ``active`` says whether the member
    trained in that epoch (``False`` once it was frozen, its values those of kept weights). A
    hyperparameter named like one of the event's keys gives way to the event's value, unless
    that is a live object (the event's ``optimizer`` list leaves the hyperparameter
    ``optimizer``, the optimizer's name).

    Raises:
        ValueError: The event already has a key ``"member"``.
    """
    ensemble = ensemble_of(event)
    collected = _collected_hparams(event) if ensemble is None else None
    if ensemble is None and collected is None:
        return None
    if MEMBER_KEY in event:
        raise ValueError(
            f"{caller}: an ensemble's event is spread into one row per member under the "
            f"column {MEMBER_KEY!r}, but the event already has a key {MEMBER_KEY!r}; rename it"
        )
    if collected is not None:  # a record collect() kept: its members are in the record
        hparams, count = collected, len(collected)
        kept = event.get(ACTIVE_KEY)
        active = list(kept) if isinstance(kept, list) and len(kept) == count else [True] * count
        event = {k: v for k, v in event.items() if k != "hparams"}
    else:
        assert ensemble is not None
        count = len(ensemble)
        hparams = list(ensemble.hparams)
        active = event_active(event, ensemble)
    rows = []
    for member in range(count):
        row: dict[str, Any] = {"step": event["step"]} if "step" in event else {}
        row[MEMBER_KEY] = member
        row.update((k, v) for k, v in hparams[member].items() if _kept(k, event))
        for key, value in event.items():
            if key in row and is_live_object(value):
                continue  # the optimizers under "optimizer": the hyperparameter (its name) stays
            spread = is_per_member(value) and len(value) == count
            row[key] = value[member] if spread else value
        row[ACTIVE_KEY] = active[member]
        rows.append(row)
    return rows


def rows_by_member(
    events: Iterable[Mapping[str, Any]], *, caller: str
) -> Iterator[Mapping[str, Any]]:
    """Pass a single model's events on; spread each ensemble's event into its members' rows.

    Example:
        >>> list(rows_by_member([{"step": 1, "loss": 0.5}], caller="collect_pd"))
        [{'step': 1, 'loss': 0.5}]
    """
    for event in events:
        rows = member_rows(event, caller=caller)
        if rows is None:
            yield event
        else:
            yield from rows


def _collected_hparams(event: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The members' hyperparameters a collected record of an ensemble keeps, else None.

    Example:
        >>> _collected_hparams({"step": 1, "hparams": [{"lr": 0.1}, {"lr": 0.2}]})
        [{'lr': 0.1}, {'lr': 0.2}]
        >>> _collected_hparams({"step": 1, "hparams": {"lr": 0.1}}) is None
        True
    """
    hparams = event.get("hparams")
    if isinstance(hparams, list) and hparams and all(isinstance(h, Mapping) for h in hparams):
        return list(hparams)
    return None


def _kept(hyperparameter: str, event: Mapping[str, Any]) -> bool:
    return hyperparameter not in event or is_live_object(event[hyperparameter])


class Recorded:
    """An ensemble as a collected record keeps it: its members' ``hparams`` and ``active``.

    A sink handed a collected history (``collect(...)`` of an ensemble's stream, a JSONL file)
    reads the members from it as from a live ensemble; there are no modules to freeze.
    """

    def __init__(self, hparams: Sequence[Mapping[str, Any]], active: Sequence[bool]) -> None:
        self.hparams, self.active = list(hparams), list(active)
        self.members: list[Any] = []

    def freeze(self, member: int) -> None:
        raise TypeError("a collected history holds no models: nothing to freeze")

    def __len__(self) -> int:
        return len(self.hparams)


def recorded_ensemble(event: Mapping[str, Any]) -> Recorded | None:
    """The ensemble a collected record describes (its ``hparams`` list), else None.

    Example:
        >>> members = recorded_ensemble({"step": 1, "hparams": [{"lr": 0.1}, {"lr": 0.2}]})
        >>> len(members), members.active
        (2, [True, True])
        >>> recorded_ensemble({"step": 1, "val_loss": 0.5}) is None
        True
    """
    hparams = _collected_hparams(event)
    if hparams is None:
        return None
    active = event.get(ACTIVE_KEY)
    if not (isinstance(active, list) and len(active) == len(hparams)):
        active = [True] * len(hparams)
    return Recorded(hparams, [bool(a) for a in active])
