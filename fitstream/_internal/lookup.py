"""Reading a monitored metric out of an event, with errors that show what the event holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .checks import describe
from .values import scalar_value

__all__ = ["metric_value", "missing_key_error"]


def missing_key_error(event: Mapping[str, Any], key: str, *, func: str) -> KeyError:
    """Build the ``KeyError`` for a key the event lacks, listing the keys it has.

    Example:
        >>> missing_key_error({"step": 1, "train_loss": 0.5}, "model", func="best_model")
        KeyError("best_model: the event has no key 'model'; its keys are 'step', 'train_loss'")
    """
    present = ", ".join(repr(k) for k in event) or "(none)"
    return KeyError(f"{func}: the event has no key {key!r}; its keys are {present}")


def metric_value(event: Mapping[str, Any], key: str, *, func: str) -> float:
    """Return ``event[key]`` as a ``float`` (numbers, 0-d tensors and NumPy scalars; not bools).

    Raises:
        KeyError: The event has no ``key``; the message lists the keys it has and how to keep
            only the events that have it.
        TypeError: The value is not a single number; the message quotes it.

    Example:
        >>> import torch
        >>> metric_value({"val_loss": torch.tensor(0.25)}, "val_loss", func="ema")
        0.25
        >>> metric_value({"val_loss": "low"}, "val_loss", func="ema")
        Traceback (most recent call last):
        ...
        TypeError: ema: the value of 'val_loss' must be a number or a 0-d tensor, got str: 'low'
    """
    if key not in event:
        # A metric may be computed in some epochs only (a Lightning run validating every n
        # epochs has no val_loss in between): say how to keep just those.
        error = missing_key_error(event, key, func=func)
        raise KeyError(
            f"{error.args[0]}. If {key!r} is only computed in some epochs (e.g. validation "
            f"every n epochs), pass on just those: (ev for ev in events if {key!r} in ev)"
        )
    raw = event[key]
    number = scalar_value(raw)
    if number is None or isinstance(number, bool):
        raise TypeError(
            f"{func}: the value of {key!r} must be a number or a 0-d tensor, got {describe(raw)}"
        )
    return float(number)
