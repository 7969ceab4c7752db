"""What a value in an event is: a plain number, or a live object that sinks leave out."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["as_float_lists", "as_floats", "exact_dtype", "is_live_object", "scalar_value"]


def scalar_value(value: object) -> int | float | bool | None:
    """Return ``value`` as a plain Python number, or ``None`` when it is not a scalar.

    Python numbers come back unchanged; 0-d tensors (and one-element tensors of shape ``()``)
    and NumPy scalars or 0-d arrays come back through ``.item()``. Everything else, including
    tensors with more than one element or on the meta device (no values), gives ``None``.

    Example:
        >>> scalar_value(torch.tensor(0.5)), scalar_value(3), scalar_value("x")
        (0.5, 3, None)
        >>> scalar_value(torch.ones(2)) is None
        True
    """
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and value.device.type != "meta":  # a meta tensor has no value
            item = value.item()
            return item if isinstance(item, bool | int | float) else None
        return None
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        item = value.item()  # type: ignore[attr-defined]
        return item if isinstance(item, bool | int | float) else None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def is_live_object(value: Any, _within: frozenset[int] = frozenset()) -> bool:
    """Tell whether ``value`` is a live training object that sinks drop by default.

    Models, optimizers (also duck-typed ones, with ``step()`` and ``zero_grad()``),
    schedulers, metrics and anything else with a ``state_dict()``, and Lightning ``Trainer``
    objects, are live objects: they are not metrics of the epoch. So is a list of them (an
    ensemble's optimizers, one per member).

    Example:
        >>> is_live_object(nn.Linear(1, 1)), is_live_object(0.5)
        (True, False)
        >>> is_live_object([nn.Linear(1, 1), nn.Linear(1, 1)]), is_live_object([0.5])
        (True, False)
    """
    if isinstance(value, list | tuple) and value:
        if id(value) in _within:  # a list that holds itself: no live object, a value
            return False
        within = _within | {id(value)}
        return all(is_live_object(item, within) for item in value)
    if isinstance(value, nn.Module | torch.optim.Optimizer):
        return True
    if callable(getattr(value, "state_dict", None)):
        return True
    if callable(getattr(value, "step", None)) and callable(getattr(value, "zero_grad", None)):
        return True
    return hasattr(value, "callback_metrics") and callable(getattr(value, "fit", None))


def exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype for sums and read-backs on ``device``: float64, or float32 where that is all.

    Example:
        >>> exact_dtype(torch.device("cpu"))
        torch.float64
    """
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def as_floats(values: Mapping[str, object]) -> dict[str, float]:
    """Return each scalar entry of ``values`` as a Python ``float``, in order.

    One-element tensors are read back with one host transfer per device (stacked first), so
    a GPU pays one synchronisation for all of them, not one per entry. Other entries go
    through :func:`scalar_value`; entries that are not scalars are left out.

    Example:
        >>> as_floats({"val_loss": torch.tensor(0.5), "n": 3, "hist": torch.ones(3), "s": "x"})
        {'val_loss': 0.5, 'n': 3.0}
    """
    numbers: dict[str, float] = {}
    per_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                per_device.setdefault(value.device, []).append((key, value.detach().reshape(())))
            continue
        number = scalar_value(value)
        if number is not None:
            numbers[key] = float(number)
    for device, pairs in per_device.items():
        if len(pairs) == 1:
            key, tensor = pairs[0]
            numbers[key] = float(tensor.item())
            continue
        stacked = torch.stack([tensor.to(exact_dtype(device)) for _, tensor in pairs])
        numbers.update(zip((key for key, _ in pairs), stacked.tolist(), strict=True))
    return {key: numbers[key] for key in values if key in numbers}


def as_float_lists(values: Mapping[str, Sequence[object]]) -> dict[str, list[float]]:
    """Return each entry's list of scalars as a list of Python floats (see :func:`as_floats`).

    All the tensors of all the lists are read back together, one transfer per device.

    Example:
        >>> as_float_lists({"val_loss": [torch.tensor(0.5), 0.25], "acc": [torch.tensor(1.0)]})
        {'val_loss': [0.5, 0.25], 'acc': [1.0]}
    """
    flat = {
        f"{key}\0{k}": value for key, entries in values.items() for k, value in enumerate(entries)
    }
    floats = as_floats(flat)
    return {
        key: [floats[f"{key}\0{k}"] for k in range(len(entries))] for key, entries in values.items()
    }
