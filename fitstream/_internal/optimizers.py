"""Finding an event's optimizers and reading or setting their learning rates.

Sources name the optimizers they step in the event: :func:`fitstream.epoch_stream` under
``optimizer``; ``fitstream_lightning.fit_stream`` through ``trainer.optimizers``; an ensemble
source under ``optimizer`` as a list with one optimizer per member. Stages that change the
learning rate or save a run find them with :func:`event_optimizers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .checks import describe
from .lookup import missing_key_error
from .values import scalar_value

__all__ = [
    "ADAM_FAMILY",
    "as_rate",
    "check_optimizer_arg",
    "event_optimizers",
    "group_rates",
    "hparams_of",
    "learning_rate",
    "mark_stepped",
    "param_groups",
]

ADAM_FAMILY = (torch.optim.Adam, torch.optim.AdamW)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


def param_groups(optimizer: object) -> list[dict[str, Any]]:
    """The optimizer's ``param_groups`` that hold an ``"lr"``; empty for a duck-typed optimizer.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> [group["lr"] for group in param_groups(opt)], param_groups(object())
        ([0.1], [])
    """
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, Sequence):
        return []
    return [group for group in groups if isinstance(group, dict) and "lr" in group]


def group_rates(optimizer: object) -> list[float]:
    """The rate of each of ``optimizer``'s param groups now, as floats (NaN if not a number).

    A tensor rate (as ``capturable`` optimizers keep) is read back as a ``float``.

    Example:
        >>> import torch
        >>> group_rates(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5))
        [0.5]
    """
    rates = []
    for group in param_groups(optimizer):
        number = scalar_value(group["lr"])
        rates.append(float("nan") if number is None else float(number))
    return rates


def as_rate(rates: Sequence[float]) -> float | list[float] | None:
    """Rates as an event's ``lr``: one ``float`` for one group, a list for several, else None.

    Example:
        >>> as_rate([0.1]), as_rate([0.1, 0.01]), as_rate([])
        (0.1, [0.1, 0.01], None)
    """
    if not rates:
        return None
    return rates[0] if len(rates) == 1 else list(rates)


def learning_rate(optimizers: Sequence[object]) -> float | list[float] | None:
    """The learning rate of the optimizers' param groups, in order, as the event's ``lr``.

    One group in all gives a ``float``; several give a list, one ``float`` per group; none
    (a duck-typed optimizer without ``param_groups``) gives ``None`` (see :func:`as_rate`).

    Example:
        >>> import torch
        >>> w = torch.zeros(1, requires_grad=True)
        >>> learning_rate([torch.optim.SGD([w], lr=0.5)])
        0.5
        >>> two = torch.optim.SGD([{"params": [w]}, {"params": [], "lr": 0.01}], lr=0.5)
        >>> learning_rate([two])
        [0.5, 0.01]
    """
    return as_rate([rate for optimizer in optimizers for rate in group_rates(optimizer)])


def check_optimizer_arg(
    value: object, *, func: str, needs: tuple[str, ...], arg: str = "optimizer"
) -> None:
    """Refuse, at the call, an ``optimizer=`` that is not one (or a list of them).

    ``needs`` names what the stage uses: ``"param_groups"`` to change rates, ``"state_dict"``
    to save. ``None`` (the event's own optimizers) passes.

    Example:
        >>> check_optimizer_arg("sgd", func="f", needs=("param_groups",))
        Traceback (most recent call last):
        ...
        TypeError: f: 'optimizer' must be a torch optimizer (or a list of them, one per ...
    """
    if value is None:
        return
    given = list(value) if isinstance(value, list | tuple) else [value]
    for position, opt in enumerate(given or [value]):
        where = f"'{arg}[{position}]'" if isinstance(value, list | tuple) else f"'{arg}'"
        if isinstance(opt, type) or not callable(getattr(opt, "step", None)):
            got = f"the class {opt.__name__}" if isinstance(opt, type) else describe(opt)
            raise TypeError(
                f"{func}: {where} must be a torch optimizer (or a list of them, one per "
                f"ensemble member), got {got}"
            )
        for need in needs:
            found = getattr(opt, need, None)
            ok = isinstance(found, Sequence) if need == "param_groups" else callable(found)
            if not ok:
                what = "learning rates to change" if need == "param_groups" else "state to save"
                raise TypeError(
                    f"{func}: {where} has no {need}, so it has no {what}; give a torch "
                    f"optimizer, got {describe(opt)}"
                )


def event_optimizers(event: Mapping[str, Any], given: object, *, func: str) -> list[Any]:
    """The optimizers a stage acts on: ``given`` if not ``None``, else those the event names.

    The event names them under ``optimizer`` (one optimizer, or a list: one per member of an
    ensemble) or through ``trainer.optimizers`` (a Lightning event). ``given`` may likewise be
    one optimizer or a list.

    Raises:
        KeyError: Neither ``given`` nor the event names an optimizer; the message lists the
            event's keys.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> event_optimizers({"optimizer": opt}, None, func="f") == [opt]
        True
        >>> event_optimizers({"step": 1}, None, func="f")
        Traceback (most recent call last):
        ...
        KeyError: "f: the event has no key 'optimizer'; its keys are 'step' ..."
    """
    found: object = given
    if found is None:
        found = event.get("optimizer")
    if found is None and "trainer" in event:
        found = getattr(event["trainer"], "optimizers", None)
    if found is None:
        error = missing_key_error(event, "optimizer", func=func)
        raise KeyError(
            f"{error.args[0]} (nor 'trainer'); pass the optimizer to {func}(..., optimizer=...)"
        )
    if isinstance(found, list | tuple):
        return list(found)
    return [found]


def hparams_of(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer's hyperparameters as plain scalars, from its first param group.

    A group's ``lr`` under a torch LR scheduler is reported as the rate the schedule started
    from (its ``initial_lr``), so that a member's setting stays one value while it trains.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> hparams_of(opt)
        {'optimizer': 'SGD', 'lr': 0.1, 'weight_decay': 0, 'momentum': 0, 'dampening': 0, \
'nesterov': False}
    """
    group = optimizer.param_groups[0]
    out: dict[str, Any] = {"optimizer": type(optimizer).__name__}
    keys: tuple[str, ...]
    if isinstance(optimizer, torch.optim.SGD):
        keys = ("lr", "weight_decay", "momentum", "dampening", "nesterov")
    elif isinstance(optimizer, ADAM_FAMILY):
        keys = ("lr", "weight_decay", "betas", "eps", "amsgrad")
    else:
        keys = tuple(k for k in group if k != "params")
    for key in keys:
        # A scheduled rate changes every epoch (or step); the setting is where it started.
        value = _plain(group.get("initial_lr", group.get(key)) if key == "lr" else group.get(key))
        if key == "betas" and isinstance(value, tuple | list) and len(value) == 2:
            out["beta1"], out["beta2"] = float(_plain(value[0])), float(_plain(value[1]))
        elif (isinstance(value, bool) and key in ("nesterov", "amsgrad")) or (
            isinstance(value, int | float) and not isinstance(value, bool)
        ):
            out[key] = value
    return out


def mark_stepped(optimizer: torch.optim.Optimizer) -> None:
    """Record on ``optimizer`` that it stepped, as its own ``step()`` would have.

    An ensemble's vectorised step updates the members without calling ``optimizers[k].step()``;
    without this mark a torch LR scheduler over that optimizer warns that it was stepped
    before the optimizer (``_opt_called`` in recent torch, ``_step_count`` in older ones).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> mark_stepped(opt)
        >>> opt._opt_called
        True
    """
    optimizer._opt_called = True  # type: ignore[attr-defined]
    optimizer._step_count = getattr(optimizer, "_step_count", 0) + 1  # type: ignore[attr-defined]
