"""Per-step learning-rate schedules: the ``schedulers=`` keyword of the sources.

A torch LR scheduler given as ``schedulers=`` is stepped after every optimizer step (OneCycleLR,
a warm-up), which only the source can do, since only the source sees the step. A per-epoch
scheduler stays a stage: ``tap(lambda ev: scheduler.step())``. :func:`fitstream.epoch_stream`
takes one scheduler over its optimizer; :func:`fitstream.ensemble_stream` one per member, over
that member's optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._internal.checks import describe

__all__ = ["check_schedulers"]


def _is_plateau(scheduler: object) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _check_one(scheduler: object, *, arg: str, func: str) -> None:
    if _is_plateau(scheduler):
        raise TypeError(
            f"{func}: {arg} is a ReduceLROnPlateau, which steps on a validation metric once "
            f"per epoch, not after every batch; use the fitstream.reduce_lr_on_plateau stage"
        )
    needed = ("step", "state_dict", "load_state_dict")
    if isinstance(scheduler, type) or not all(
        callable(getattr(scheduler, name, None)) for name in needed
    ):
        raise TypeError(
            f"{func}: {arg} must be a torch LR scheduler (such as "
            f"torch.optim.lr_scheduler.OneCycleLR(optimizer, ...)), got {describe(scheduler)}"
        )


def check_schedulers(
    schedulers: object, optimizers: Sequence[Any], *, ensemble: bool, func: str
) -> tuple[Any, ...]:
    """Check ``schedulers``: one over the optimizer, or one per member over its optimizer.

    Returns one scheduler per optimizer, or ``()`` when ``schedulers`` is ``None``.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LinearLR(opt)
        >>> check_schedulers(sched, [opt], ensemble=False, func="f") == (sched,)
        True
        >>> other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> check_schedulers(sched, [other], ensemble=False, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'schedulers' steps another optimizer than 'optimizer'; ...
    """
    if schedulers is None:
        return ()
    if not ensemble:
        if isinstance(schedulers, list | tuple):
            raise TypeError(
                f"{func}: 'schedulers' must be one LR scheduler over 'optimizer' (combine "
                f"several with torch.optim.lr_scheduler.SequentialLR), got "
                f"{describe(schedulers)}"
            )
        given = [schedulers]
    elif not isinstance(schedulers, list | tuple):
        raise TypeError(
            f"{func}: 'schedulers' must be a list of LR schedulers, one per member over its "
            f"own optimizer, got {describe(schedulers)}"
        )
    else:
        given = list(schedulers)
    if len(given) != len(optimizers):
        raise ValueError(
            f"{func}: 'schedulers' must hold one scheduler per member's optimizer: got "
            f"{len(given)} for {len(optimizers)} optimizers"
        )
    for k, (scheduler, optimizer) in enumerate(zip(given, optimizers, strict=True)):
        arg = f"'schedulers[{k}]'" if ensemble else "'schedulers'"
        _check_one(scheduler, arg=arg, func=func)
        over = getattr(scheduler, "optimizer", None)
        if over is not optimizer:
            mine = f"'optimizers[{k}]'" if ensemble else "'optimizer'"
            found = [j for j, opt in enumerate(optimizers) if opt is over]
            where = f" (it is over optimizers[{found[0]}])" if ensemble and found else ""
            raise ValueError(
                f"{func}: {arg} steps another optimizer than {mine}{where}; build it over "
                f"the optimizer it schedules"
            )
    return tuple(given)
