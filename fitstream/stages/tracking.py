"""Remembering the best model of a run: :func:`best_model` and the :class:`BestModel` it returns.

A :class:`BestModel` is a callback for :func:`fitstream.tap`: on each event it looks at one
metric and, when that metric improves, keeps a copy of the model's ``state_dict()``. The copy is
independent of the live model, so training on does not change it, and
:meth:`BestModel.load_into` puts the best weights back at the end. On an ensemble's events
(a per-member metric) it keeps one best snapshot per member.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from .._internal.callables import mark_factory
from .._internal.checks import check_bool, check_name, describe
from .._internal.direction import legacy_mode, resolve_mode
from .._internal.lookup import metric_values, missing_key_error
from .._internal.members import ensemble_of, is_ensemble
from .._internal.states import check_device, copy_state, load_state
from ._tracker_stage import TrackerStage

__all__ = ["BestModel", "best_model"]

ModelT = TypeVar("ModelT")


class BestModel(TrackerStage):
    """Keeps the model weights of the event where a metric was best; made by :func:`best_model`.

    Call it with each event (``tap(best)`` does); it returns nothing and never changes the
    event. Read :attr:`best_value`, :attr:`best_step` and :attr:`state_dict`, or restore the
    weights with :meth:`load_into`. Called with a stream instead (``pipe(events, best)``), it
    is a stage that tracks every event it passes on and, if made with ``restore=True``, loads
    the best weights into the live model (each member's, for an ensemble) whenever that stream
    ends. As in fitstream 0.4, the arguments may also be given by position:
    ``BestModel("val_loss", "min", "cpu")``.

    On an ensemble's events, where the metric is a per-member list of K numbers, each member
    is tracked on its own: the three attributes become lists of K entries (``None`` for a
    member without a number yet), each member's snapshot is its own module's
    ``state_dict()``, and :attr:`members` is K.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> best = BestModel("val_loss")
        >>> for step, loss in enumerate([0.9, 0.4, 0.7], start=1):
        ...     best({"step": step, "model": model, "val_loss": loss})
        >>> best.best_value, best.best_step
        (0.4, 2)
    """

    def __init__(
        self,
        metric_key: str,
        mode: Literal["min", "max"] | None = None,
        device: torch.device | str | None = None,
        restore: bool = False,
        *,
        direction: Literal["min", "max"] | None = None,
    ) -> None:
        check_name(metric_key, func="best_model", what="'metric_key'")
        check_bool(restore, func="best_model", arg="restore")
        given = legacy_mode(mode, direction, func="best_model")
        self.mode = resolve_mode(metric_key, given, func="best_model")
        self._device = None if device is None else check_device(device, func="best_model")
        self.metric_key = metric_key
        self.restore = restore
        # One entry per member; one in all for a single model (self._members is None).
        self._members: int | None = None
        self._values: list[float | None] = []
        self._steps: list[Any] = []
        self._states: list[dict[str, Any] | None] = []

    @property
    def direction(self) -> str:
        """The 0.4 name of :attr:`mode`: ``"min"`` or ``"max"``."""
        return self.mode

    @property
    def members(self) -> int | None:
        """K once a per-member value was seen (an ensemble), else ``None``."""
        return self._members

    def _one_or_all(self, entries: list[Any]) -> Any:
        if self._members is not None:
            return list(entries)
        return entries[0] if entries else None

    @property
    def best_value(self) -> Any:
        """The best value of the metric seen so far, or ``None`` before any (NaN never counts).

        Per member: a list of K such values.
        """
        return self._one_or_all(self._values)

    @property
    def best_step(self) -> Any:
        """The ``step`` of the event with the best value (``None`` before any, or if absent).

        Per member: a list of K such steps.
        """
        return self._one_or_all(self._steps)

    @property
    def state_dict(self) -> Any:
        """The snapshot of ``model.state_dict()`` at the best event, or ``None`` before any.

        Per member: a list of K snapshots, member k's of ``members[k].state_dict()``.
        """
        return self._one_or_all(self._states)

    def _look_at(self, event: Mapping[str, Any]) -> None:
        value = metric_values(event, self.metric_key, func="best_model")
        values = value if isinstance(value, list) else [value]
        count = len(values) if isinstance(value, list) else None
        if not self._values:
            self._members = count
            self._values, self._steps = [None] * len(values), [None] * len(values)
            self._states = [None] * len(values)
        elif count != self._members:
            raise ValueError(
                f"best_model: the value of {self.metric_key!r} was {_kind(self._members)} in "
                f"earlier events and is {_kind(count)} now; a stream keeps one kind"
            )
        better = [k for k, v in enumerate(values) if self._improves(v, self._values[k])]
        if not better:
            return
        modules = self._modules(event, better)
        for k in better:
            self._states[k] = copy_state(modules[k].state_dict(), self._device)
            self._values[k], self._steps[k] = values[k], event.get("step")

    def _modules(self, event: Mapping[str, Any], members: list[int]) -> dict[int, nn.Module]:
        """The modules to snapshot, by member: the model, or the ensemble's members."""
        if "model" not in event:
            raise missing_key_error(event, "model", func="best_model")
        model = event["model"]
        if self._members is None:
            if not callable(getattr(model, "state_dict", None)):
                raise TypeError(
                    f"best_model: event['model'] must have a state_dict() (an nn.Module), got "
                    f"{describe(model)}"
                )
            return {0: model}
        ensemble = ensemble_of(event)
        if ensemble is None:  # metric_values refuses this first; kept for the type checker
            raise TypeError(f"best_model: event['model'] is no ensemble: {describe(model)}")
        return {k: ensemble.members[k] for k in members}

    def _improves(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        if best is None:
            return True
        if self.mode == "min":
            return value < best
        return value > best

    def load_into(self, model: ModelT, member: int | None = None) -> ModelT:
        """Load the best snapshot into ``model`` (in place) and return ``model``.

        Per member, ``load_into(module, member=k)`` loads member k's best weights into one
        module of the members' architecture, and ``load_into(target)`` loads every member's:
        ``target`` is the ensemble (each into ``target.members[k]``) or a sequence of K modules
        (e.g. the list of models given to the ensemble).

        Raises:
            RuntimeError: No snapshot has been taken yet (of that member).
            ValueError: ``member`` is given for a single model, or is out of range, or
                ``target`` does not hold one module per member.
            TypeError: ``member`` is not an int, or a module has no ``load_state_dict``.

        Example:
            >>> model = nn.Linear(1, 1)
            >>> best = best_model("val_acc")
            >>> best({"step": 1, "model": model, "val_acc": 0.8})
            >>> with torch.no_grad():
            ...     _ = model.weight.fill_(5.0)  # training moves on
            >>> best.load_into(model).weight.item() == best.state_dict["weight"].item()
            True
        """
        if self._members is None:
            if member is not None:
                raise ValueError(
                    f"best_model: 'member' is for per-member values (an ensemble), but "
                    f"{self.metric_key!r} was one number per event; call load_into(model)"
                )
            self._load(model, 0)
            return model
        if member is not None:
            if isinstance(member, bool) or not isinstance(member, int):
                raise TypeError(f"best_model: 'member' must be an int, got {describe(member)}")
            if not 0 <= member < self._members:
                raise ValueError(
                    f"best_model: 'member' must be in 0..{self._members - 1} (there are "
                    f"{self._members} members), got {member}"
                )
            self._load(model, member)
            return model
        targets = model.members if is_ensemble(model) else model
        if not isinstance(targets, Sequence) or len(targets) != self._members:
            raise ValueError(
                f"best_model: load_into(target) without 'member' needs the ensemble or a "
                f"sequence of {self._members} modules, one per member, got {describe(model)}; "
                f"to load one member, pass member=k"
            )
        for k, target in enumerate(targets):
            self._load(target, k)
        return model

    def _load(self, model: object, member: int) -> None:
        state = self._states[member] if self._states else None
        if state is None:
            which = "" if self._members is None else f" of member {member}"
            raise RuntimeError(
                f"best_model: no snapshot{which} to load yet; no event so far had a number "
                f"under {self.metric_key!r}{which} (NaN never counts as best)"
            )
        load = getattr(model, "load_state_dict", None)
        if not callable(load):
            raise TypeError(
                f"best_model: load_into needs a module with load_state_dict(), got "
                f"{describe(model)}"
            )
        if isinstance(model, nn.Module):  # a shape that does not fit is named, both shapes
            which = "" if self._members is None else f" of member {member}"
            load_state(model, state, func="best_model", what=f"the best snapshot{which}")
        else:
            load(state)

    def __repr__(self) -> str:
        return (
            f"BestModel({self.metric_key!r}, mode={self.mode!r}, "
            f"best_value={self.best_value!r}, best_step={self.best_step!r})"
        )


def _kind(members: int | None) -> str:
    return "one number" if members is None else f"a per-member list of {members} values"


def best_model(
    metric_key: str,
    *,
    mode: Literal["min", "max"] | None = None,
    device: torch.device | str | None = None,
    restore: bool = False,
    direction: Literal["min", "max"] | None = None,
) -> BestModel:
    """Track the model weights of the event where ``event[metric_key]`` was best.

    The returned :class:`BestModel` is a callback for :func:`fitstream.tap`. On each event
    whose metric is strictly better than every earlier one (lower for ``mode="min"``,
    higher for ``"max"``; NaN is never better), it snapshots ``event["model"].state_dict()``:
    every tensor is detached and cloned, so later training does not change the snapshot.

    Args:
        metric_key: The event key to compare, e.g. ``"val_loss"``.
        mode: ``"min"`` when lower is better, ``"max"`` when higher is; ``None`` infers it
            from the name of ``metric_key`` (:ref:`the direction rule <direction-rule>`:
            losses and errors ``"min"``, accuracies and scores ``"max"``).
        device: Where the snapshot's tensors live, e.g. ``"cpu"`` to keep GPU memory free;
            ``None`` keeps each tensor on its own device.
        restore: Whether, used as a stage (``pipe(events, ..., best)``), to load the best
            weights into the live model when the stream ends, for any reason: ``take``,
            ``early_stop``, the source running out, an exception in a later stage or in
            training, ``KeyboardInterrupt``, ``close()`` or garbage collection. Per member, each
            member with a snapshot gets its own best weights. Such a tracker refuses to be
            called with single events (``tap(best)`` could not restore).
        direction: fitstream 0.4's name of ``mode``; still accepted, with a
            ``DeprecationWarning``.

    Returns:
        The tracker, with ``best_value``, ``best_step``, ``state_dict`` and ``load_into(model)``.
        It is stateful: :func:`fitstream.checkpoint` can save it and :func:`fitstream.resume`
        restore it.

    Raises:
        ValueError: ``mode`` is not ``"min"``, ``"max"`` or ``None``; it is ``None`` and the
            name of ``metric_key`` tells no direction (the message lists both choices);
            ``device`` is not a device or names one this machine lacks (``"cuda"`` without a
            GPU); or ``metric_key`` is empty.
        TypeError: ``metric_key`` is not a string, ``restore`` not a bool, or both ``mode``
            and ``direction`` are given.

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
        >>> best_acc = best_model("val_acc")  # an accuracy: higher is better
        >>> _ = list(pipe(events, tap(best_acc)))
        >>> best_acc.mode, best_acc.best_step
        ('max', 2)

        With ``restore=True`` it goes in the pipeline itself, and the model ends up with the
        best weights however the stream ends:

        >>> from fitstream import take
        >>> def trained(losses):
        ...     for step, loss in enumerate(losses, start=1):
        ...         with torch.no_grad():
        ...             _ = model.bias.fill_(step)
        ...         yield {"step": step, "model": model, "val_loss": loss}
        >>> restoring = best_model("val_loss", restore=True)
        >>> _ = list(pipe(trained([0.5, 0.1, 0.3, 0.2]), restoring, take(3)))
        >>> model.bias.item()
        2.0
    """
    given = legacy_mode(mode, direction, func="best_model")
    return BestModel(metric_key, given, device=device, restore=restore)  # type: ignore[arg-type]


mark_factory(best_model, "tap(best_model('val_loss'))")
mark_factory(BestModel, "tap(BestModel('val_loss'))")
