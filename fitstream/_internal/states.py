"""Model states: a copy that training does not change, and loading one with a clear error.

:func:`copy_state` copies a ``state_dict()`` (onto a device :func:`check_device` accepted);
:func:`load_state` loads a state into a model, naming what does not fit.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .checks import describe

__all__ = ["check_device", "copy_state", "load_state"]


def copy_state(state: Mapping[str, Any], device: torch.device | None) -> dict[str, Any]:
    """Copy a state dict: tensors detached and cloned (onto ``device`` if given), the rest deep.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> kept = copy_state(net.state_dict(), None)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1)
        >>> torch.equal(kept["weight"] + 1, net.weight)
        True
    """
    copied: dict[str, Any] = OrderedDict()
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            detached = value.detach()
            copied[name] = detached.clone() if device is None else detached.to(device, copy=True)
        else:
            copied[name] = copy.deepcopy(value)
    return copied


def check_device(device: object, *, func: str) -> torch.device:
    """Return ``device`` as a :class:`torch.device` once a tensor can be put there.

    Example:
        >>> check_device("cpu", func="f")
        device(type='cpu')
        >>> check_device(3.5, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'device' must be a torch.device or a device string such as 'cpu' or
        'cuda:0', or None, got float: 3.5
    """
    expected = "a torch.device or a device string such as 'cpu' or 'cuda:0', or None"
    if not isinstance(device, torch.device | str):
        raise ValueError(f"{func}: 'device' must be {expected}, got {describe(device)}")
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"{func}: 'device' must be {expected}, got {describe(device)}") from exc
    try:
        torch.empty(0, device=parsed)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(
            f"{func}: 'device' {str(parsed)!r} cannot hold tensors on this machine "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"use 'cpu' or a device that exists"
        ) from exc
    return parsed


def load_state(model: nn.Module, state: Mapping[str, Any], *, func: str, what: str) -> None:
    """Load ``state`` into ``model``, refusing a state of another architecture by name.

    ``what`` says where the state comes from, for the message ("the best snapshot", "trial 3's
    saved state"). A missing or unexpected tensor, or one of another shape, is named with both
    shapes; nothing is loaded then.

    Example:
        >>> load_state(nn.Linear(2, 3), nn.Linear(2, 4).state_dict(), func="f", what="the state")
        Traceback (most recent call last):
        ...
        ValueError: f: the state does not fit the model: 'weight' is (4, 2) there, (3, 2) in the
        model; load it into a model of the architecture it was saved from
    """
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    extra = [name for name in state if name not in own]
    fix = "load it into a model of the architecture it was saved from"
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the model has {missing[:3]} that it lacks")
        if extra:
            parts.append(f"it has {extra[:3]} that the model lacks")
        raise ValueError(f"{func}: {what} does not fit the model: {'; '.join(parts)}; {fix}")
    for name, tensor in own.items():
        saved = state[name]
        if isinstance(saved, torch.Tensor) and tuple(saved.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{func}: {what} does not fit the model: {name!r} is {tuple(saved.shape)} "
                f"there, {tuple(tensor.shape)} in the model; {fix}"
            )
    model.load_state_dict(state)
