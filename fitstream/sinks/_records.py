"""Turn an event into a record: the keys a sink keeps, and values as plain data.

The sinks (:func:`fitstream.collect`, :func:`fitstream.collect_jsonl`,
:func:`fitstream.collect_pd`) and :func:`fitstream.log_tensorboard` share these rules:

- ``include`` and ``exclude`` are sequences of key names, never both at once;
- without ``include``, the key ``model`` (whatever it holds, as fitstream 0.4 did) and live
  objects (a model under any key, an optimizer, a Trainer) are left out;
- a key named in ``include`` is kept where an event has it (Lightning leaves ``val_loss`` out of
  epochs without validation); one that no event of the stream had is an error listing the
  keys the events had, raised when the stream ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from .._internal.checks import check_strings
from .._internal.lookup import unseen_keys_error
from .._internal.members import ensemble_of
from .._internal.values import is_live_object, scalar_value

__all__ = [
    "KeySelection",
    "check_key_names",
    "check_selection",
    "plain_value",
    "records",
    "select",
    "with_members",
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
    check_strings(names, func=caller, arg=name)
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


def plain_value(value: Any, _within: frozenset[int] = frozenset()) -> Any:
    """Return 0-d tensors and NumPy scalars as Python numbers, with no autograd graph kept.

    Larger tensors that require grad are detached and copied (a history must not keep the
    graph alive, nor follow a parameter as training changes it); lists, tuples and dicts are
    converted item by item (a list or dict that holds itself is kept as it is, for the sink
    to refuse or keep). Anything else comes back unchanged.

    Example:
        >>> plain_value(torch.tensor(2.5)), plain_value([1, 2])
        (2.5, [1, 2])
        >>> w = torch.ones(2, requires_grad=True)
        >>> plain_value({"norm": (w * 2).sum(), "w": w})
        {'norm': 4.0, 'w': tensor([1., 1.])}
    """
    if isinstance(value, torch.Tensor):
        number = scalar_value(value)
        if number is not None:
            return number
        return value.detach().clone() if value.requires_grad else value
    if type(value).__module__ == "numpy":
        number = scalar_value(value)
        if number is not None:
            return number
    if type(value) in (list, tuple, dict):
        if id(value) in _within:
            return value
        within = _within | {id(value)}
        if type(value) is dict:
            return {key: plain_value(item, within) for key, item in value.items()}
        return type(value)(plain_value(item, within) for item in value)
    return value


def select(event: Mapping[str, Any], selection: KeySelection, *, caller: str) -> dict[str, Any]:
    """Return the record a sink keeps of ``event``, values passed through :func:`plain_value`.

    With ``include``, those keys the event has, in that order (a live object named there is
    kept); otherwise every key but those in ``exclude``, ``model`` and live objects.

    Example:
        >>> from torch import nn
        >>> ev = {"step": 1, "model": nn.Linear(1, 1), "train_loss": torch.tensor(0.5)}
        >>> select(ev, (None, frozenset()), caller="collect")
        {'step': 1, 'train_loss': 0.5}
        >>> select(ev, (("train_loss",), frozenset()), caller="collect")
        {'train_loss': 0.5}
    """
    include, exclude = selection
    event = with_members(event)
    if include is not None:
        return {key: plain_value(event[key]) for key in include if key in event}
    return {
        key: plain_value(value)
        for key, value in event.items()
        if key not in exclude and key != "model" and not is_live_object(value)
    }


def with_members(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """An ensemble's event with what its ensemble tells of the members, read now.

    ``hparams`` (each member's hyperparameters) and ``active`` (whether it still trains) are
    kept in the record, since the ensemble (under ``model``) is not: a history can then be
    grouped by setting (:func:`fitstream.summarize`). Keys the event has already win.

    Example:
        >>> with_members({"step": 1}), "hparams" in with_members({"step": 1})
        ({'step': 1}, False)
    """
    ensemble = ensemble_of(event)
    if ensemble is None or "member" in event:  # a single model's, or one member's row
        return event
    added: dict[str, Any] = {}
    if "hparams" not in event:
        added["hparams"] = [dict(h) for h in ensemble.hparams]
    if "active" not in event:
        added["active"] = list(ensemble.active)
    return {**event, **added} if added else event


def records(
    events: Iterable[Mapping[str, Any]], selection: KeySelection, *, caller: str
) -> Iterator[dict[str, Any]]:
    """Yield :func:`select`'s record of each event; check ``include`` once the events end.

    Example:
        >>> list(records([{"step": 1, "a": 1}, {"step": 2}], (("a",), frozenset()), caller="f"))
        [{'a': 1}, {}]
        >>> list(records([{"step": 1}], (("b",), frozenset()), caller="f"))
        Traceback (most recent call last):
        ...
        KeyError: "f: include names 'b', which the one event had; they had keys: 'step'"
    """
    include = selection[0]
    seen: set[str] = set()
    count = 0
    for event in events:
        count += 1
        if include is not None:
            seen.update(event)
        yield select(event, selection, caller=caller)
    if include is not None:
        error = unseen_keys_error(caller, "include", include, seen, count)
        if error is not None:
            raise error
