"""Gradient clipping before each optimizer step: ``clip_grad_norm=`` and ``clip_grad_value=``.

One model is clipped as ``torch.nn.utils.clip_grad_norm_`` (or ``clip_grad_value_``) would clip
it, over the parameters its optimizer steps. An ensemble's member ``k`` is clipped by its own
norm, over its own parameters, so it trains as it would alone: on the stacked gradients that
is one ``(K,)`` norm and one scale per member, for all members in a few kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .._internal.checks import describe

__all__ = ["Clip", "check_clip", "clip_gradients", "clip_members", "clipped_step"]

_EPS = 1e-6  # what torch.nn.utils.clip_grad_norm_ adds to the norm before dividing


@dataclass(frozen=True)
class Clip:
    """What to clip: the total norm to ``norm``, or every value to ``[-value, value]``."""

    norm: float | None
    value: float | None


def _positive(value: object, *, arg: str, func: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{func}: '{arg}' must be a positive number or None, got {describe(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{func}: '{arg}' must be a positive, finite number, got {value!r}")
    return float(value)


def check_clip(clip_grad_norm: object, clip_grad_value: object, *, func: str) -> Clip | None:
    """Check the two clipping keywords; ``None`` when neither is given.

    Example:
        >>> check_clip(1.0, None, func="f")
        Clip(norm=1.0, value=None)
        >>> check_clip(0, None, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'clip_grad_norm' must be a positive, finite number, got 0
    """
    norm = _positive(clip_grad_norm, arg="clip_grad_norm", func=func)
    value = _positive(clip_grad_value, arg="clip_grad_value", func=func)
    if norm is not None and value is not None:
        raise ValueError(
            f"{func}: give clip_grad_norm or clip_grad_value, not both (got "
            f"clip_grad_norm={norm!r} and clip_grad_value={value!r})"
        )
    if norm is None and value is None:
        return None
    return Clip(norm=norm, value=value)


def clipped_step(
    step: Callable[[], Any], parameters: Iterable[torch.Tensor], clip: Clip | None
) -> Callable[[], Any]:
    """``step`` preceded by clipping the gradients of ``parameters``; ``step`` itself if none.

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> (10 * w.sum()).backward()
        >>> clipped_step(opt.step, [w], Clip(norm=None, value=0.5))()
        >>> w.tolist()
        [-0.5, -0.5]
    """
    if clip is None:
        return step
    params = list(parameters)

    def clip_then_step() -> Any:
        clip_gradients(params, clip)
        return step()

    return clip_then_step


def clip_gradients(parameters: list[torch.Tensor], clip: Clip) -> None:
    """Clip the gradients of ``parameters`` in place (device work only: no host sync).

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> (10 * w.sum()).backward()
        >>> clip_gradients([w], Clip(norm=None, value=0.5))
        >>> w.grad.tolist()
        [0.5, 0.5]
    """
    if clip.norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, clip.norm)
    else:
        assert clip.value is not None
        torch.nn.utils.clip_grad_value_(parameters, clip.value)


@torch.no_grad()
def clip_members(grads: list[torch.Tensor], clip: Clip) -> None:
    """Clip the stacked ``(K, n)`` gradients in place, each member (row) on its own.

    Example:
        >>> g = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> clip_members([g], Clip(norm=1.0, value=None))
        >>> [round(x, 4) for x in g.reshape(-1).tolist()]
        [0.6, 0.8, 0.3, 0.4]
    """
    if clip.value is not None:
        for grad in grads:
            grad.clamp_(-clip.value, clip.value)
        return
    assert clip.norm is not None
    squares = torch.stack([grad.pow(2).sum(dim=1) for grad in grads]).sum(dim=0)
    scale = (clip.norm / (squares.sqrt() + _EPS)).clamp(max=1.0).unsqueeze(1)
    for grad in grads:
        grad.mul_(scale)
