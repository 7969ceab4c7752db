"""Reading a monitored metric out of an event, with errors that show what the event holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .checks import describe
from .members import ensemble_of, is_per_member
from .values import scalar_value

__all__ = [
    "MetricValueError",
    "as_float",
    "metric_value",
    "metric_values",
    "missing_key_error",
    "unseen_keys_error",
]


class MetricValueError(TypeError, ValueError):
    """A monitored value that is not a number: a TypeError, and a ValueError as in fitstream 0.4."""


def as_float(number: float, key: str, *, func: str) -> float:
    """Return ``number`` as a float, or raise a ValueError naming ``key`` when it is too large.

    Example:
        >>> as_float(3, "val_loss", func="ema")
        3.0
        >>> as_float(10**400, "val_loss", func="ema")
        Traceback (most recent call last):
        ...
        ValueError: ema: the value of 'val_loss' is too large for a float (an int of 401 digits)
    """
    try:
        return float(number)
    except OverflowError:
        raise ValueError(
            f"{func}: the value of {key!r} is too large for a float (an int of "
            f"{len(str(abs(int(number))))} digits)"
        ) from None


def missing_key_error(event: Mapping[str, Any], key: str, *, func: str) -> KeyError:
    """Build the ``KeyError`` for a key the event lacks, listing the keys it has.

    Example:
        >>> missing_key_error({"step": 1, "train_loss": 0.5}, "model", func="best_model")
        KeyError("best_model: the event has no key 'model'; its keys are 'step', 'train_loss'")
    """
    present = ", ".join(repr(k) for k in event) or "(none)"
    return KeyError(f"{func}: the event has no key {key!r}; its keys are {present}")


def unseen_keys_error(
    caller: str, argument: str, names: Iterable[str], seen: Iterable[str], count: int
) -> KeyError | None:
    """Build the KeyError for names that none of ``count`` events had, or return None.

    ``seen`` is every key the events had. After no events at all, nothing can be said.

    Example:
        >>> unseen_keys_error("collect", "include", ["val_acc"], {"step", "val_loss"}, 3)
        KeyError("collect: include names 'val_acc', which none of the 3 events had; ...")
        >>> unseen_keys_error("collect", "include", ["step"], {"step"}, 3) is None
        True
    """
    had = set(seen)
    missing = [key for key in names if key not in had]
    if not missing or count == 0:
        return None
    listed = ", ".join(repr(key) for key in missing)
    keys = ", ".join(repr(key) for key in sorted(had)) or "(none)"
    events = "the one event" if count == 1 else f"none of the {count} events"
    return KeyError(
        f"{caller}: {argument} names {listed}, which {events} had; they had keys: {keys}"
    )


def metric_value(event: Mapping[str, Any], key: str, *, func: str) -> float:
    """Return ``event[key]`` as a ``float`` (numbers, 0-d tensors and NumPy scalars; not bools).

    Raises:
        KeyError: The event has no ``key``; the message lists the keys it has and how to keep
            only the events that have it.
        TypeError: The value is not a single number; the message quotes it (a per-member
            list gets its own message: use :func:`metric_values` where lists are supported).
            The error is also a ValueError, which fitstream 0.4 raised here.
        ValueError: The value is an int too large for a float.

    Example:
        >>> import torch
        >>> metric_value({"val_loss": torch.tensor(0.25)}, "val_loss", func="ema")
        0.25
        >>> metric_value({"val_loss": "low"}, "val_loss", func="ema")
        Traceback (most recent call last):
        ...
        fitstream._internal.lookup.MetricValueError: ema: the value of 'val_loss' must be ...
    """
    raw = _raw_value(event, key, func=func)
    if is_per_member(raw):
        raise TypeError(
            f"{func}: the value of {key!r} is per-member (a list of {len(raw)} values, one per "
            f"ensemble member), and {func} here takes one number per event; pick one member "
            f"first, e.g. augment(lambda ev: {{'{key}_0': ev[{key!r}][0]}})"
        )
    number = scalar_value(raw)
    if number is None or isinstance(number, bool):
        raise MetricValueError(
            f"{func}: the value of {key!r} must be a number or a 0-d tensor, got {describe(raw)}"
        )
    return as_float(number, key, func=func)


def _raw_value(event: Mapping[str, Any], key: str, *, func: str) -> Any:
    if key not in event:
        # A metric may be computed in some epochs only (a Lightning run validating every n
        # epochs has no val_loss in between): say how to keep just those.
        error = missing_key_error(event, key, func=func)
        raise KeyError(
            f"{error.args[0]}. If {key!r} is only computed in some epochs (e.g. validation "
            f"every n epochs), pass on just those: (ev for ev in events if {key!r} in ev)"
        )
    return event[key]


def metric_values(event: Mapping[str, Any], key: str, *, func: str) -> float | list[float]:
    """Return ``event[key]`` as a ``float``, or a per-member value as a list of K floats.

    A per-member value (a list of numbers, see :mod:`fitstream._internal.members`) must come
    with an ensemble under ``model``, one entry per member, or with no ``model`` at all (a
    history replayed from a sink).

    Raises:
        KeyError: The event has no ``key`` (as :func:`metric_value`).
        TypeError: The value is neither a number nor a per-member list of numbers, or is a
            list while ``event["model"]`` is a single model.
        ValueError: The list's length differs from the number of the ensemble's members.

    Example:
        >>> metric_values({"val_loss": [0.5, 0.25]}, "val_loss", func="ema")
        [0.5, 0.25]
        >>> metric_values({"val_loss": 0.5}, "val_loss", func="ema")
        0.5
    """
    raw = _raw_value(event, key, func=func)
    if not is_per_member(raw):
        return metric_value(event, key, func=func)
    ensemble = ensemble_of(event)
    if ensemble is None and event.get("model") is not None:
        raise TypeError(
            f"{func}: the value of {key!r} must be a number or a 0-d tensor, got "
            f"{describe(raw)}; a list of numbers is read as per-member values, which needs an "
            f"ensemble under 'model' (as ensemble_stream gives), but event['model'] is "
            f"{describe(event['model'])}"
        )
    if ensemble is not None and len(raw) != len(ensemble):
        raise ValueError(
            f"{func}: the value of {key!r} is a list of {len(raw)} values but the event's "
            f"ensemble has {len(ensemble)} members; a per-member value has one per member"
        )
    return [as_float(v, key, func=func) for v in raw]
