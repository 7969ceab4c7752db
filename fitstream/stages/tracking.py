"""Remembering the best model of a run: :func:`best_model` and the :class:`BestModel` it returns.

A :class:`BestModel` is a callback for :func:`fitstream.tap`: on each event it looks at one
metric and, when that metric improves, keeps a copy of the model's ``state_dict()``. The copy is
independent of the live model, so training on does not change it, and
:meth:`BestModel.load_into` puts the best weights back at the end.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from .._internal.checks import check_name, describe
from .._internal.lookup import metric_value, missing_key_error

__all__ = ["BestModel", "best_model"]

ModelT = TypeVar("ModelT", bound=nn.Module)

_DIRECTIONS = ("min", "max")


def _snapshot(state: Mapping[str, Any], device: torch.device | None) -> dict[str, Any]:
    """Copy a state dict: tensors detached and cloned (onto ``device`` if given)."""
    copied: dict[str, Any] = OrderedDict()
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            detached = value.detach()
            copied[name] = detached.clone() if device is None else detached.to(device, copy=True)
        else:
            copied[name] = copy.deepcopy(value)
    return copied


class BestModel:
    """Keeps the model weights of the event where a metric was best; made by :func:`best_model`.

    Call it with each event (``tap(best)`` does); it returns nothing and never changes the
    event. Read :attr:`best_value`, :attr:`best_step` and :attr:`state_dict`, or restore the
    weights with :meth:`load_into`.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> best = BestModel("val_loss", direction="min")
        >>> for step, loss in enumerate([0.9, 0.4, 0.7], start=1):
        ...     best({"step": step, "model": model, "val_loss": loss})
        >>> best.best_value, best.best_step
        (0.4, 2)
    """

    def __init__(
        self,
        metric_key: str,
        *,
        direction: Literal["min", "max"] = "min",
        device: torch.device | str | None = None,
    ) -> None:
        check_name(metric_key, func="best_model", what="'metric_key'")
        if direction not in _DIRECTIONS:
            raise ValueError(f"best_model: 'direction' must be 'min' or 'max', got {direction!r}")
        self._device: torch.device | None = None
        if device is not None:
            try:
                self._device = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(
                    f"best_model: 'device' must be a torch.device or a device string such as "
                    f"'cpu', or None, got {describe(device)}"
                ) from exc
        self.metric_key = metric_key
        self.direction = direction
        self._best_value: float | None = None
        self._best_step: Any = None
        self._state: dict[str, Any] | None = None

    @property
    def best_value(self) -> float | None:
        """The best value of the metric seen so far, or ``None`` before any (NaN never counts)."""
        return self._best_value

    @property
    def best_step(self) -> Any:
        """The ``step`` of the event with the best value (``None`` before any, or if absent)."""
        return self._best_step

    @property
    def state_dict(self) -> dict[str, Any] | None:
        """The snapshot of ``model.state_dict()`` at the best event, or ``None`` before any."""
        return self._state

    def __call__(self, event: Mapping[str, Any]) -> None:
        """Look at one event; snapshot its model if its metric is strictly better than the best.

        Raises:
            KeyError: The event lacks the metric (or, on improvement, ``"model"``); the message
                lists the keys it has.
            TypeError: The metric's value is not a number, or ``event["model"]`` has no
                ``state_dict()``.
        """
        value = metric_value(event, self.metric_key, func="best_model")
        if not self._improves(value):
            return
        if "model" not in event:
            raise missing_key_error(event, "model", func="best_model")
        model = event["model"]
        state_dict = getattr(model, "state_dict", None)
        if not callable(state_dict):
            raise TypeError(
                f"best_model: event['model'] must have a state_dict() (an nn.Module), got "
                f"{describe(model)}"
            )
        self._state = _snapshot(state_dict(), self._device)
        self._best_value = value
        self._best_step = event.get("step")

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self._best_value is None:
            return True
        if self.direction == "min":
            return value < self._best_value
        return value > self._best_value

    def load_into(self, model: ModelT) -> ModelT:
        """Load the best snapshot into ``model`` (in place) and return ``model``.

        Raises:
            RuntimeError: No snapshot has been taken yet.

        Example:
            >>> model = nn.Linear(1, 1)
            >>> best = best_model("val_acc", direction="max")
            >>> best({"step": 1, "model": model, "val_acc": 0.8})
            >>> with torch.no_grad():
            ...     _ = model.weight.fill_(5.0)  # training moves on
            >>> best.load_into(model).weight.item() == best.state_dict["weight"].item()
            True
        """
        if self._state is None:
            raise RuntimeError(
                f"best_model: no snapshot to load yet; no event so far had a number under "
                f"{self.metric_key!r} (NaN never counts as best)"
            )
        model.load_state_dict(self._state)
        return model

    def __repr__(self) -> str:
        return (
            f"BestModel({self.metric_key!r}, direction={self.direction!r}, "
            f"best_value={self._best_value!r}, best_step={self._best_step!r})"
        )


def best_model(
    metric_key: str,
    *,
    direction: Literal["min", "max"] = "min",
    device: torch.device | str | None = None,
) -> BestModel:
    """Track the model weights of the event where ``event[metric_key]`` was best.

    The returned :class:`BestModel` is a callback for :func:`fitstream.tap`. On each event
    whose metric is strictly better than every earlier one (lower for ``direction="min"``,
    higher for ``"max"``; NaN is never better), it snapshots ``event["model"].state_dict()``:
    every tensor is detached and cloned, so later training does not change the snapshot.

    Args:
        metric_key: The event key to compare, e.g. ``"val_loss"``.
        direction: ``"min"`` when lower is better (losses), ``"max"`` when higher is
            (accuracy).
        device: Where the snapshot's tensors live, e.g. ``"cpu"`` to keep GPU memory free;
            ``None`` keeps each tensor on its own device.

    Returns:
        The tracker, with ``best_value``, ``best_step``, ``state_dict`` and ``load_into(model)``.

    Raises:
        ValueError: ``direction`` is not ``"min"`` or ``"max"``, ``device`` is not a device, or
            ``metric_key`` is empty.
        TypeError: ``metric_key`` is not a string.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> best = best_model("val_loss", device="cpu")
        >>> for step, loss in enumerate([0.5, 0.2, float("nan"), 0.3], start=1):
        ...     with torch.no_grad():
        ...         _ = model.bias.fill_(step)  # stands for an epoch of training
        ...     best({"step": step, "model": model, "val_loss": loss})
        >>> best.best_step, best.best_value, best.state_dict["bias"].item()
        (2, 0.2, 2.0)
        >>> best.load_into(model).bias.item()
        2.0

        In a pipeline it goes in a :func:`fitstream.tap`:

        >>> from fitstream import pipe, tap
        >>> events = [{"step": 1, "model": model, "val_acc": 0.6},
        ...           {"step": 2, "model": model, "val_acc": 0.9}]
        >>> best_acc = best_model("val_acc", direction="max")
        >>> _ = list(pipe(events, tap(best_acc)))
        >>> best_acc.best_step
        2
    """
    return BestModel(metric_key, direction=direction, device=device)
