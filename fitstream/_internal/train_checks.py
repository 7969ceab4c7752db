"""Checks of what a training source is given: the optimizer and the data, against the model."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["check_no_closure", "check_optimizer_for", "check_rates", "check_training_data"]


def check_rates(optimizer: object, *, func: str, arg: str) -> None:
    """Refuse a param group whose ``lr`` is not a number (a string trains as torch parses it).

    Example:
        >>> w = torch.zeros(1, requires_grad=True)
        >>> check_rates(torch.optim.SGD([w], lr=0.1), func="f", arg="optimizer")
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> opt.param_groups[0]["lr"] = "0.1"
        >>> check_rates(opt, func="f", arg="optimizer")
        Traceback (most recent call last):
        ...
        TypeError: f: 'optimizer' has param_groups[0]['lr'] = '0.1' (str); a rate must be ...
    """
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, Sequence):
        return
    for g, group in enumerate(groups):
        rate = group.get("lr") if isinstance(group, dict) else None
        if rate is None or isinstance(rate, torch.Tensor):
            continue
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(
                f"{func}: '{arg}' has param_groups[{g}]['lr'] = {rate!r:.40} "
                f"({type(rate).__name__}); a rate must be a number, such as 0.1"
            )


def check_no_closure(optimizer: object, *, func: str, arg: str) -> None:
    """Refuse an optimizer whose ``step`` needs a closure (LBFGS): the sources call ``step()``.

    Example:
        >>> w = torch.zeros(1, requires_grad=True)
        >>> check_no_closure(torch.optim.SGD([w], lr=0.1), func="f", arg="optimizer")
        >>> check_no_closure(torch.optim.LBFGS([w]), func="f", arg="optimizer")
        Traceback (most recent call last):
        ...
        TypeError: f: 'optimizer' (LBFGS) steps only with a closure that recomputes the loss, ...
    """
    # The class's own step: a scheduler wraps the instance's in a (*args, **kwargs) function.
    step = getattr(type(optimizer), "step", None)
    try:
        signature = inspect.signature(step)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    try:
        signature.bind(optimizer)
    except TypeError:
        needs = True
    else:
        needs = isinstance(optimizer, torch.optim.LBFGS)  # its closure is optional in name only
    if needs:
        raise TypeError(
            f"{func}: '{arg}' ({type(optimizer).__name__}) steps only with a closure that "
            f"recomputes the loss, which a per-batch training loop does not give; use an "
            f"optimizer whose step() needs no closure (SGD, Adam, AdamW...)"
        )


def check_optimizer_for(optimizer: object, model: nn.Module, *, func: str) -> None:
    """Refuse an optimizer class, or an optimizer none of whose parameters is ``model``'s.

    An optimizer made for another model (or for a copy of this one) would leave the loss
    where it is, silently. An optimizer over a part of the model (a frozen encoder) or over
    extra tensors (a learnable loss weight) is fine; one without ``param_groups`` (duck-typed)
    is not looked into. Whether ``optimizer`` has ``step()`` and ``zero_grad()`` is checked
    by the sources' own ``check_optimizer``.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> check_optimizer_for(torch.optim.SGD(model.parameters(), lr=0.1), model, func="f")
        >>> check_optimizer_for(torch.optim.SGD, model, func="f")
        Traceback (most recent call last):
        ...
        TypeError: f: 'optimizer' must be an optimizer instance, got the class SGD; ...
        >>> other = nn.Linear(2, 1)
        >>> check_optimizer_for(torch.optim.SGD(other.parameters(), lr=0.1), model, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'optimizer' updates none of the model's parameters; ...
    """
    if isinstance(optimizer, type):
        raise TypeError(
            f"{func}: 'optimizer' must be an optimizer instance, got the class "
            f"{optimizer.__name__}; call it with model.parameters(), e.g. "
            f"{optimizer.__name__}(model.parameters(), lr=1e-3)"
        )
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, Sequence):
        return
    updated = {
        id(p) for group in groups if isinstance(group, dict) for p in group.get("params", ())
    }
    trainable = {id(p) for p in model.parameters()}
    if updated and trainable and not updated & trainable:
        raise ValueError(
            f"{func}: 'optimizer' updates none of the model's parameters; it was made for "
            f"another model (or for a copy of this one). Make it from this model: "
            f"{type(optimizer).__name__}(model.parameters(), ...)"
        )


def check_training_data(
    tensors: Sequence[torch.Tensor], model: nn.Module, *, func: str, arg: str
) -> None:
    """Refuse data that requires grad, or floating data of another dtype than the model's.

    Data that requires grad is part of an autograd graph: the second batch would back-propagate
    through the first one's graph again. Floating data must have the dtype of the model's
    floating parameters (float64 data and a float32 model fail deep in the first matmul).

    Example:
        >>> model = nn.Linear(2, 1)
        >>> check_training_data([torch.zeros(3, 2)], model, func="f", arg="data")
        >>> check_training_data([torch.zeros(3, 2, dtype=torch.float64)], model, func="f",
        ...                     arg="data")
        Traceback (most recent call last):
        ...
        ValueError: f: 'data[0]' has dtype torch.float64 but the model's parameters are ...
    """
    for position, tensor in enumerate(tensors):
        if tensor.requires_grad:
            raise ValueError(
                f"{func}: '{arg}[{position}]' requires grad (it is part of an autograd graph); "
                f"training data must be plain tensors: pass tensor.detach()"
            )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is None:
        return
    for position, tensor in enumerate(tensors):
        if tensor.is_floating_point() and tensor.dtype != dtype:
            raise ValueError(
                f"{func}: '{arg}[{position}]' has dtype {tensor.dtype} but the model's "
                f"parameters are {dtype}; convert one of them, e.g. tensor.to({dtype}) "
                f"or model.to({tensor.dtype})"
            )
