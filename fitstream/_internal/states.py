"""Loading a saved state into a model, with an error that names what does not fit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["load_state"]


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
