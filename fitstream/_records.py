"""Turn an event into a record: the keys a sink keeps, and values as plain data.

The sinks (:func:`fitstream.collect`, :func:`fitstream.collect_jsonl`,
:func:`fitstream.collect_pd`) and :func:`fitstream.log_tensorboard` share these rules:

- ``include`` and ``exclude`` are sequences of key names, never both at once;
- without ``include``, live objects (the model, an optimizer, a Trainer) are left out;
- a key named in ``include`` that an event lacks is an error listing the keys it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ._values import is_live_object, scalar_value

__all__ = [
    "KeySelection",
    "check_key_names",
    "check_selection",
    "missing_key_error",
    "plain_value",
    "select",
]


def check_key_names(value: object, *, name: str, caller: str) -> tuple[str, ...] | None:
    """Return ``value`` as a tuple of key names, or ``None`` when ``value`` is ``None``.

    A single string is refused (``include="step"`` would otherwise mean four one-letter
    keys), as is an empty list (it would keep nothing).

    Example:
        >>> check_key_names(["step", "val_loss"], name="include", caller="collect")
        ('step', 'val_loss')
        >>> check_key_names("step", name="include", caller="collect")
        Traceback (most recent call last):
        ...
        TypeError: collect: include must be a list of key names, got str: 'step'...
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"{caller}: {name} must be a list of key names, got {type(value).__name__}: "
            f"{value!r:.80} (write {name}=[...] even for one key)"
        )
    names = tuple(value)
    for key in names:
        if not isinstance(key, str):
            raise TypeError(
                f"{caller}: {name} must hold key names (str), got {type(key).__name__}: {key!r:.80}"
            )
    if not names:
        raise ValueError(f"{caller}: {name} must name at least one key, got an empty {name}")
    return names


KeySelection = tuple[tuple[str, ...] | None, frozenset[str]]
"""``(include, exclude)`` as :func:`check_selection` returns them."""


def check_selection(include: object, exclude: object, *, caller: str) -> KeySelection:
    """Check a sink's ``include``/``exclude`` arguments and return them normalised.

    Example:
        >>> check_selection(None, ["lr"], caller="collect")
        (None, frozenset({'lr'}))
        >>> check_selection(["a"], ["b"], caller="collect")
        Traceback (most recent call last):
        ...
        ValueError: collect: pass include or exclude, not both ...
    """
    if include is not None and exclude is not None:
        raise ValueError(
            f"{caller}: pass include or exclude, not both (got include={include!r:.80} "
            f"and exclude={exclude!r:.80})"
        )
    kept = check_key_names(include, name="include", caller=caller)
    dropped = check_key_names(exclude, name="exclude", caller=caller)
    return kept, frozenset(dropped or ())


def missing_key_error(
    caller: str, argument: str, missing: Iterable[str], event: Mapping[str, Any]
) -> KeyError:
    """Build the KeyError for keys an event lacks, listing the keys it has.

    Example:
        >>> missing_key_error("collect", "include", ["val_acc"], {"step": 3, "val_loss": 0.1})
        KeyError("collect: include names 'val_acc', which the event at step 3 lacks; ...")
    """
    names = ", ".join(repr(key) for key in missing)
    where = f"the event at step {event['step']!r}" if "step" in event else "an event"
    has = ", ".join(repr(key) for key in event) or "(none)"
    return KeyError(f"{caller}: {argument} names {names}, which {where} lacks; it has keys: {has}")


def plain_value(value: Any) -> Any:
    """Return 0-d tensors and NumPy scalars as Python numbers; anything else unchanged.

    Example:
        >>> plain_value(torch.tensor(2.5)), plain_value([1, 2])
        (2.5, [1, 2])
    """
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        number = scalar_value(value)
        if number is not None:
            return number
    return value


def select(event: Mapping[str, Any], selection: KeySelection, *, caller: str) -> dict[str, Any]:
    """Return the record a sink keeps of ``event``, values passed through :func:`plain_value`.

    With ``include``, exactly those keys in that order (a live object named there is kept);
    otherwise every key but those in ``exclude`` and live objects.

    Example:
        >>> from torch import nn
        >>> ev = {"step": 1, "model": nn.Linear(1, 1), "train_loss": torch.tensor(0.5)}
        >>> select(ev, (None, frozenset()), caller="collect")
        {'step': 1, 'train_loss': 0.5}
        >>> select(ev, (("train_loss",), frozenset()), caller="collect")
        {'train_loss': 0.5}
    """
    include, exclude = selection
    if include is not None:
        missing = [key for key in include if key not in event]
        if missing:
            raise missing_key_error(caller, "include", missing, event)
        return {key: plain_value(event[key]) for key in include}
    return {
        key: plain_value(value)
        for key, value in event.items()
        if key not in exclude and not is_live_object(value)
    }
