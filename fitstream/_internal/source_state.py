"""The state a source keeps beside an optimizer: its per-step LR scheduler and its GradScaler.

:func:`fitstream.epoch_stream` and :func:`fitstream.ensemble_stream` step a scheduler given as
``schedulers=`` after every optimizer step, and :func:`fitstream.epoch_stream` manages a
``GradScaler`` for ``autocast=torch.float16``. Both change what the next epoch does, so
:func:`fitstream.checkpoint` saves them and :func:`fitstream.resume` loads them. The source
attaches them here, keyed by the optimizer they go with (the object every checkpoint already
names), so the checkpoint finds them from the event's optimizers alone.

A resume may come before the source is built (``resume(...)`` then ``epoch_stream(...)``): the
states it loads for an optimizer with nothing attached yet wait here, and are loaded into the
scheduler and scaler when a source attaches them. Entries go with their optimizer.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["attach", "attached", "restore", "saved_states"]

_KINDS = ("scheduler", "scaler")

_LIVE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_PENDING: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _hyperparameters(optimizer: Any) -> list[dict[str, Any]]:
    groups = getattr(optimizer, "param_groups", [])
    return [{k: v for k, v in group.items() if k != "params"} for group in groups]


def attach(optimizer: Any, *, scheduler: Any = None, scaler: Any = None) -> None:
    """Record the scheduler and scaler a source steps ``optimizer`` with; load waiting states.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> attach(opt, scheduler=sched)
        >>> attached(opt)["scheduler"] is sched
        True
    """
    live = {"scheduler": scheduler, "scaler": scaler}
    _LIVE[optimizer] = live
    waiting = _PENDING.pop(optimizer, {})
    for kind in _KINDS:
        if live[kind] is not None and waiting.get(kind) is not None:
            live[kind].load_state_dict(waiting[kind])
    if scheduler is not None and waiting.get("scheduler") is not None:
        # A scheduler built after the resume set the optimizer's rate (and a cycled momentum)
        # to its own first values: the next step must use those the saved run was at.
        for group, saved in zip(optimizer.param_groups, waiting["groups"], strict=False):
            group.update(saved)


def attached(optimizer: Any) -> dict[str, Any]:
    """The scheduler and scaler attached to ``optimizer`` (``None`` for each one without)."""
    try:
        found = _LIVE.get(optimizer)
    except TypeError:  # not weak-referenceable: nothing attached
        found = None
    return dict(found) if found else {"scheduler": None, "scaler": None}


def saved_states(optimizer: Any) -> dict[str, Any]:
    """The ``state_dict`` of what is attached to ``optimizer``, ``None`` where nothing is.

    Example:
        >>> import torch
        >>> saved_states(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
        {'scheduler': None, 'scaler': None}
    """
    live = attached(optimizer)
    states = {kind: None if live[kind] is None else live[kind].state_dict() for kind in _KINDS}
    if states["scheduler"] is not None:
        # Older torch keeps methods in some schedulers' state (OneCycleLR's anneal_func):
        # the scheduler a resume loads into has its own, and a checkpoint holds plain values.
        states["scheduler"] = {k: v for k, v in states["scheduler"].items() if not callable(v)}
    return states


def restore(optimizer: Any, states: dict[str, Any] | None) -> None:
    """Load saved states into what is attached to ``optimizer``, or keep them for a source.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> opt.param_groups[0]["lr"] = 0.125  # as a resume loads it
        >>> restore(opt, {"scheduler": {**sched.state_dict(), "last_epoch": 3}, "scaler": None})
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> attach(opt, scheduler=sched)  # built after the resume: the state waited
        >>> sched.last_epoch, opt.param_groups[0]["lr"]
        (3, 0.125)
    """
    if not states or all(states.get(kind) is None for kind in _KINDS):
        return
    live = attached(optimizer)
    waiting: dict[str, Any] = {}
    for kind in _KINDS:
        state = states.get(kind)
        if state is None:
            continue
        if live[kind] is not None:
            live[kind].load_state_dict(state)
        else:
            waiting[kind] = state
    if waiting:
        waiting["groups"] = _hyperparameters(optimizer)  # as the resume left them
        _PENDING[optimizer] = waiting
