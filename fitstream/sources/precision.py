"""Mixed precision: the ``autocast=`` keyword of the sources, and the GradScaler it may need.

The forward pass and the loss run under ``torch.autocast(device_type, dtype)``; the backward
pass and the optimizer step stay in the parameters' own dtype, as PyTorch's automatic mixed
precision recipe does. ``torch.bfloat16`` has float32's range, so it needs no loss scaling and
works on the CPU and on CUDA. ``torch.float16`` does need it: on CUDA,
:func:`fitstream.epoch_stream` manages a ``GradScaler`` (saved by :func:`fitstream.checkpoint`).
"""

from __future__ import annotations

from typing import Any

import torch

from .._internal.checks import describe

__all__ = ["check_autocast", "new_scaler"]

_DTYPES = (torch.bfloat16, torch.float16)


def check_autocast(
    autocast: object, device: torch.device, *, ensemble: bool, func: str
) -> torch.dtype | None:
    """Check ``autocast``: ``None``, or a half-precision float dtype the device can run.

    Example:
        >>> check_autocast(torch.bfloat16, torch.device("cpu"), ensemble=False, func="f")
        torch.bfloat16
        >>> check_autocast(torch.float16, torch.device("cpu"), ensemble=False, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: autocast=torch.float16 is refused on the CPU: ...
    """
    if autocast is None:
        return None
    if not isinstance(autocast, torch.dtype):
        raise TypeError(
            f"{func}: 'autocast' must be a torch dtype (torch.bfloat16 or torch.float16) or "
            f"None, got {describe(autocast)}"
        )
    if not autocast.is_floating_point:
        raise ValueError(
            f"{func}: 'autocast' must be a float dtype to compute in (torch.bfloat16 or "
            f"torch.float16), got {autocast}, which is not a float type"
        )
    if autocast not in _DTYPES:
        raise ValueError(
            f"{func}: 'autocast' must be a half-precision dtype (torch.bfloat16 or "
            f"torch.float16), got {autocast}: autocasting to it would change nothing"
        )
    if autocast == torch.float16 and device.type != "cuda":
        raise ValueError(
            f"{func}: autocast=torch.float16 is refused on the {device.type.upper()}: float16 "
            f"needs loss scaling against underflow, which this source manages on CUDA only, "
            f"and it is slow off CUDA; use autocast=torch.bfloat16"
        )
    if autocast == torch.float16 and ensemble:
        raise ValueError(
            f"{func}: autocast=torch.float16 is refused for an ensemble: its loss scaling "
            f"would skip steps member by member; use autocast=torch.bfloat16, which needs no "
            f"scaling"
        )
    return autocast


def new_scaler(dtype: torch.dtype | None, device: torch.device) -> Any:
    """The ``GradScaler`` that ``autocast=torch.float16`` on CUDA trains with; else ``None``."""
    if dtype != torch.float16 or device.type != "cuda":
        return None
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):  # torch >= 2.3
        return amp.GradScaler(device.type)
    return torch.cuda.amp.GradScaler()
