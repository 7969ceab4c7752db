"""What a value in an event is: a plain number, or a live object that sinks leave out."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

__all__ = ["is_live_object", "scalar_value"]


def scalar_value(value: object) -> int | float | bool | None:
    """Return ``value`` as a plain Python number, or ``None`` when it is not a scalar.

    Python numbers come back unchanged; 0-d tensors (and one-element tensors of shape ``()``)
    and NumPy scalars or 0-d arrays come back through ``.item()``. Everything else, including
    tensors with more than one element, gives ``None``.

    Example:
        >>> scalar_value(torch.tensor(0.5)), scalar_value(3), scalar_value("x")
        (0.5, 3, None)
        >>> scalar_value(torch.ones(2)) is None
        True
    """
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            item = value.item()
            return item if isinstance(item, bool | int | float) else None
        return None
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        item = value.item()  # type: ignore[attr-defined]
        return item if isinstance(item, bool | int | float) else None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def is_live_object(value: Any) -> bool:
    """Tell whether ``value`` is a live training object that sinks drop by default.

    Models, optimizers, schedulers, metrics and anything else with a ``state_dict()``, and
    Lightning ``Trainer`` objects, are live objects: they are not metrics of the epoch.

    Example:
        >>> is_live_object(nn.Linear(1, 1)), is_live_object(0.5)
        (True, False)
    """
    if isinstance(value, nn.Module | torch.optim.Optimizer):
        return True
    if callable(getattr(value, "state_dict", None)):
        return True
    return hasattr(value, "callback_metrics") and callable(getattr(value, "fit", None))
