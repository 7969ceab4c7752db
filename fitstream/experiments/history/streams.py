"""An ensemble's history read member by member, one stream or several joined.

A history is what :func:`~fitstream.collect` keeps of an ensemble's events (one record per
epoch, per-member lists, and the members' ``hparams``), the same read back from a JSON Lines
file, the live events themselves, or the tidy frame of :func:`~fitstream.collect_pd`.

Several streams' histories joined into one list (``hists[16] + hists[64]``, one per width)
are read as what they are: a new stream starts where the steps start again, the member count
changes, or the members' hyperparameters change. Each stream's members keep their own
hyperparameters, so ``by=["width", "lr"]`` groups them right. Streams whose members tell
nothing apart (the same ``hparams``) are named by passing a dict ``{name: history}``: each
member then has the hyperparameter ``stream`` with its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..._internal.checks import describe
from ..._internal.frames import frame_records
from ..._internal.members import ensemble_of
from .curves import Curve, number

__all__ = ["STREAM", "history_records", "split_streams", "stream_curves"]

STREAM = "stream"
"""The hyperparameter that names each stream of a ``{name: history}`` dict."""


def history_records(history: object, *, func: str) -> list[Mapping[str, Any]]:
    """The records of a history: a list of events or records, or collect_pd's frame."""
    if type(history).__name__ == "DataFrame" and hasattr(history, "columns"):
        return frame_records(history, func=func)
    if isinstance(history, str | bytes | Mapping) or not isinstance(history, Iterable):
        raise TypeError(
            f"{func}: 'history' must be an ensemble's history: a list of events or records "
            f"(what collect() returns), collect_pd's DataFrame, an optuna Study or a dict of "
            f"named histories, got {describe(history)}"
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
            f"for an ensemble_stream's events): {func} compares the members of an ensemble"
        )
    return hparams


def split_streams(
    records: list[Mapping[str, Any]], *, func: str
) -> list[tuple[int, list[Mapping[str, Any]]]]:
    """The history cut into its streams: ``(first record's position, records)`` for each.

    A new stream starts at a record whose step is not after the one before, or whose
    members' count or hyperparameters differ from its stream's, or (live events) whose
    ensemble is another object.

    Example:
        >>> one = [{"step": s, "hparams": [{"w": 16}]} for s in (1, 2)]
        >>> two = [{"step": s, "hparams": [{"w": 64}, {"w": 64}]} for s in (1, 2)]
        >>> [(start, len(part)) for start, part in split_streams(one + two, func="f")]
        [(0, 2), (2, 2)]
    """
    streams: list[tuple[int, list[Mapping[str, Any]]]] = []
    identity: Any = None
    last: float | None = None  # the stream's last step
    for position, record in enumerate(records):
        current = _identity(record)
        if current is None:  # a record that does not repeat its members: the same stream
            current = identity
        step = number(record.get("step"))
        again = last is not None and not math.isnan(step) and step <= last  # NaN: no step
        if not streams or current != identity or again:
            streams.append((position, []))
            last = None
        streams[-1][1].append(record)
        identity = current
        if not math.isnan(step):
            last = step
    return streams


def _identity(record: Mapping[str, Any]) -> Any:
    """What the records of one stream share: its ensemble, or its members' hyperparameters.

    None for a record that has neither.
    """
    ensemble = ensemble_of(record)
    if ensemble is not None:
        return id(ensemble)
    hparams = record.get("hparams")
    return None if not isinstance(hparams, list) else repr([sorted(h.items()) for h in hparams])


def stream_curves(
    records: list[Mapping[str, Any]], key: str, *, first: int, start: int, func: str,
    extra: Mapping[str, Any] | None = None,
) -> list[Curve]:  # fmt: skip
    """One :class:`Curve` of ``key`` per member of one stream, numbered from ``first``.

    Records without ``key`` (an epoch without validation) give no point. A member frozen
    early (its record's ``active`` entry false, as :func:`~fitstream.collect` keeps it) keeps
    the value it had at the first record that shows it stopped; a ``None`` entry also carries
    the member's previous value. The members' hyperparameters are those of the stream's first
    record, with ``extra`` added.
    """
    hparams = [{**h, **(extra or {})} for h in _hparams_of(records[0], func=func)]
    count = len(hparams)
    steps: list[float] = []
    columns: list[list[float]] = [[] for _ in range(count)]
    stopped = [False] * count
    for position, record in enumerate(records, start=start + 1):
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value, list) or len(value) != count:
            raise ValueError(
                f"{func}: record {position - 1}'s {key!r} must be a list of one value per "
                f"member ({count}), got {describe(value)}"
            )
        active = record.get("active")
        steps.append(number(record.get("step", position)))
        for k, entry in enumerate(value):
            column = columns[k]
            if (stopped[k] or entry is None) and column:
                column.append(column[-1])
            else:
                column.append(_checked(entry, key, position - 1, k, func=func))
            if isinstance(active, list) and len(active) == count and active[k] is False:
                stopped[k] = True
    return [Curve(first + k, hparams[k], list(steps), column) for k, column in enumerate(columns)]


def _checked(entry: object, key: str, record: int, member: int, *, func: str) -> float:
    """A member's value as a float; a string is refused (it would read as NaN silently)."""
    if isinstance(entry, str | bytes):
        raise TypeError(
            f"{func}: record {record}'s {key!r} holds a string for member {member} "
            f"({entry!r:.40}); the key must hold numbers (NaN and None are gaps)"
        )
    return number(entry)
