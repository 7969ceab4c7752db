"""One trial as the worker trains it: its members (one per fold), its curve and its best epoch.

A trial is one setting. Without ``folds`` it is one member of an ensemble; with ``folds`` it
is F members, one per fold, built by calling ``build(trial)`` once per fold (the trial's
parameters are suggested by the first call and read back by the others). Every epoch the
trial's value is the mean of its members' values of the key; its best epoch is the epoch
where that mean is best, by the same rule :func:`~fitstream.summarize` uses (the first best,
NaN left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..._internal.checks import describe
from ..._internal.train_checks import check_optimizer_for
from .carriers import cut_state

__all__ = [
    "BuildError",
    "TrialRun",
    "architecture",
    "better",
    "build_members",
    "check_built",
    "mean_of",
    "original_number",
]


class BuildError(Exception):
    """``build(trial)`` raised (the error is the ``__cause__``): only that trial fails."""


_PLAIN = (str, int, float, bool)


def architecture(model: nn.Module, optimizer: torch.optim.Optimizer) -> Hashable:
    """What trials must share to train as one ensemble: modules, tensors, optimizer kind."""
    kind = type(optimizer).__name__
    family = "Adam" if kind in ("Adam", "AdamW") else kind
    return (
        tuple((name, type(m).__name__) for name, m in model.named_modules()),
        tuple((n, tuple(t.shape), str(t.dtype)) for n, t in model.named_parameters()),
        tuple((n, tuple(t.shape), str(t.dtype)) for n, t in model.named_buffers()),
        family,
        len(optimizer.param_groups),
    )


def better(value: float, than: float | None, *, minimize: bool) -> bool:
    """Whether ``value`` is strictly better than ``than`` (NaN never is; anything beats None).

    Example:
        >>> better(0.5, 0.7, minimize=True), better(0.5, None, minimize=False)
        (True, True)
        >>> better(float("nan"), None, minimize=True), better(0.7, 0.7, minimize=True)
        (False, False)
    """
    if math.isnan(value):
        return False
    if than is None:
        return True
    return value < than if minimize else value > than


def mean_of(values: Sequence[float]) -> float:
    """The mean of ``values``, NaN if any is NaN (a fold that failed fails the setting).

    Example:
        >>> mean_of([0.25, 0.75]), math.isnan(mean_of([1.0, float("nan")]))
        (0.5, True)
    """
    return math.fsum(values) / len(values)


def original_number(trial: Any) -> int:
    """The number of the trial a retried trial repeats (Optuna's ``failed_trial``), else its own.

    Example:
        >>> from types import SimpleNamespace
        >>> original_number(SimpleNamespace(number=7, system_attrs={"failed_trial": 3}))
        3
    """
    attrs = getattr(trial, "system_attrs", None) or {}
    first = attrs.get("failed_trial")
    return int(first) if isinstance(first, int) else int(trial.number)


@dataclass
class TrialRun:
    """A trial this worker trains: its members, their data order, its values so far.

    ``models`` are what ``build`` made (one per fold); ``members`` and ``member_optimizers``
    what trains in the ensemble: the same objects, or carriers padded to a wider MLP
    (:mod:`.carriers`), whose trained weights are cut back to ``models``' shapes.
    """

    trial: Any
    models: list[nn.Module]
    optimizers: list[torch.optim.Optimizer]
    folds: list[int | None]
    generators: list[torch.Generator | None]
    kind: Hashable
    members: list[nn.Module] = field(default_factory=list)
    member_optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    steps: int = 0
    curve: list[float] = field(default_factory=list)
    member_values: list[list[float]] = field(default_factory=list)
    best_at: int | None = None
    best_state: list[dict[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        if not self.members:  # trained as built
            self.members, self.member_optimizers = list(self.models), list(self.optimizers)

    @property
    def padded(self) -> bool:
        """Whether the trial trains on carriers padded to a wider MLP."""
        return self.members[0] is not self.models[0]

    def trained_states(self) -> list[dict[str, torch.Tensor]]:
        """The members' weights now, in the shapes of the trial's own models (copies)."""
        if self.padded:
            return [cut_state(c, m) for c, m in zip(self.members, self.models, strict=True)]
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.members]

    @property
    def number(self) -> int:
        """The trial's number in the study."""
        return int(self.trial.number)

    @property
    def size(self) -> int:
        """The members the trial takes in an ensemble: one per fold (one without folds)."""
        return len(self.models)

    def hparams(self, member: int) -> dict[str, Any]:
        """Member ``member``'s hyperparameters: the trial, its parameters, and its fold."""
        own = {f"params_{k}": v for k, v in self.trial.params.items() if isinstance(v, _PLAIN)}
        fold = self.folds[member]
        return {"trial": self.number, **own, **({} if fold is None else {"fold": fold})}

    def record(self, values: Sequence[float], *, minimize: bool, keep: bool) -> float:
        """Add one epoch of the members' values; return the trial's value (their mean).

        When the mean is the best so far, the members' weights are kept (cloned) if ``keep``.
        """
        self.steps += 1
        mean = mean_of(values)
        self.curve.append(mean)
        self.member_values.append(list(values))
        best = None if self.best_at is None else self.curve[self.best_at]
        if better(mean, best, minimize=minimize):
            self.best_at = len(self.curve) - 1
            if keep:
                self.best_state = self.trained_states()
        return mean

    @property
    def best_value(self) -> float | None:
        """The best mean value so far (None while every value was NaN)."""
        return None if self.best_at is None else self.curve[self.best_at]

    @property
    def best_step(self) -> int | None:
        """The trial's epoch (from 1) of its best mean value."""
        return None if self.best_at is None else self.best_at + 1

    def attrs(self) -> dict[str, Any]:
        """The user attributes a finished trial keeps: epochs, best epoch, the folds' values."""
        out: dict[str, Any] = {"epochs_trained": self.steps}
        # each member's value at every epoch: the study reads as a history (summarize)
        out["curves"] = [list(column) for column in zip(*self.member_values, strict=True)]
        if self.folds[0] is not None:
            out["folds"] = list(self.folds)
        if self.best_at is not None:
            out["best_step"] = self.best_at + 1
            if self.folds[0] is not None:
                out["fold_values"] = self.member_values[self.best_at]
        return out


def build_members(
    build: Callable[[Any], Any], trial: Any, count: int, device: torch.device, *, func: str
) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    """Call ``build(trial)`` ``count`` times (once per fold); check what it returns each time."""
    models: list[nn.Module] = []
    optimizers: list[torch.optim.Optimizer] = []
    for _ in range(count):
        try:
            made = build(trial)
        except Exception as exc:
            raise BuildError(str(exc)) from exc
        model, optimizer = check_built(made, trial.number, device, func=func)
        if models and architecture(model, optimizer) != architecture(models[0], optimizers[0]):
            raise ValueError(
                f"{func}: build(trial) for trial {trial.number} made models of different "
                "architectures for its folds; a trial's parameters must decide its architecture"
            )
        models.append(model)
        optimizers.append(optimizer)
    return models, optimizers


def check_built(
    made: object, number: int, device: torch.device | None, *, func: str
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Check ``build``'s result for trial ``number``: a model and its optimizer (on ``device``)."""
    where = f"{func}: build(trial) for trial {number}"
    if not isinstance(made, tuple | list) or len(made) != 2:
        raise TypeError(f"{where} must return (model, optimizer), got {describe(made)}")
    model, optimizer = made
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} returned a model that is {describe(model)}, not a Module")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{where} returned an optimizer that is {describe(optimizer)}, not a "
            "torch.optim.Optimizer"
        )
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if device is not None and tensor.device != device:
            raise ValueError(
                f"{where} returned a model with {name!r} on {tensor.device}, but the data "
                f"is on {device}; build it there"
            )
    check_optimizer_for(optimizer, model, func=where)
    return model, optimizer
