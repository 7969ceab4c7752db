"""Put a new model and optimizer into one slot of a running ensemble (``Ensemble.replace``).

A search keeps K slots busy: when a member's trial ends, the next trial's model takes its
place at once (:func:`fitstream.search`). :class:`Replacer` does that for the stream that built
the ensemble: it checks the newcomer, copies its weights into the member's rows of the stacked
weights and makes the new module's tensors views into them (as ``ensemble_stream`` did for
the first members), starts the member's optimizer state afresh (zero moments, step count 0, a
momentum buffer that starts at its first gradient) with the new optimizer's hyperparameters,
and lets the member train again if it was frozen. From the next epoch on the member trains as
``epoch_stream`` would train the new model alone; the other members are untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..._internal.checks import check_generator, describe
from .adam import VectorAdam
from .member_checks import check_models, check_optimizers
from .member_data import check_member_hparams
from .optim import ADAM_FAMILY, MemberSteps
from .sgd import VectorSGD
from .stacking import Ensemble

__all__ = ["Replacer"]

_FUNC = "Ensemble.replace"


class Replacer:
    """The stream's own way to put a newcomer into slot ``k`` (installed on its ensemble)."""

    def __init__(
        self,
        ensemble: Ensemble,
        stepper: VectorSGD | VectorAdam | MemberSteps,
        optimizers: list[torch.optim.Optimizer],
        settings: list[dict[str, Any]],
        *,
        graphed: bool,
        scheduled: bool = False,
        generators: list[torch.Generator] | None = None,
    ) -> None:
        self.ensemble, self.stepper = ensemble, stepper
        self.optimizers, self.settings, self.graphed = optimizers, settings, graphed
        self.scheduled = scheduled
        self.generators = generators  # the stream's own list, one per member, when it has one

    def __call__(
        self,
        k: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        hparams: Mapping[str, Any] | None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Check the newcomer, then install it in slot ``k`` (nothing changes on a refusal)."""
        ensemble = self.ensemble
        if self.graphed:
            raise ValueError(
                f"{_FUNC}: a stream with cuda_graphs=True cannot take a new member yet; "
                "run the search with cuda_graphs=False"
            )
        if self.scheduled:
            raise ValueError(
                f"{_FUNC}: the stream steps a scheduler per member (schedulers=), which a new "
                "member would not have; run the search without per-step schedulers"
            )
        if any(model is member for member in ensemble.members):
            raise ValueError(
                f"{_FUNC}: 'model' is already a member of the ensemble; build a new module"
            )
        reference = ensemble.members[0] if k != 0 else ensemble.members[-1]
        check_models([reference, model], func=_FUNC)
        check_optimizers([optimizer], [model], func=_FUNC)
        self._check_kind(optimizer)
        given = check_member_hparams([dict(hparams or {})], [optimizer], func=_FUNC)
        assert given is not None
        self._check_generator(k, generator)
        self._install(k, model, optimizer, given[0])
        if generator is not None:
            assert self.generators is not None
            self.generators[k] = generator

    def _check_generator(self, k: int, generator: object) -> None:
        if generator is None:
            return
        if self.generators is None:
            raise ValueError(
                f"{_FUNC}: 'generator' gives a member its own shuffle order, but this stream "
                "shuffles every member with one generator (or not at all); pass "
                "ensemble_stream(generator=[...]) one generator per member"
            )
        device = self.ensemble._slabs[0].data.device
        check_generator(generator, device, func=_FUNC)
        for other, each in enumerate(self.generators):
            if each is generator and other != k:
                raise ValueError(
                    f"{_FUNC}: 'generator' is member {other}'s generator; give the newcomer its own"
                )

    def _check_kind(self, optimizer: torch.optim.Optimizer) -> None:
        stepper = self.stepper
        allowed: tuple[type, ...] | None = None
        if isinstance(stepper, VectorSGD):
            allowed = (torch.optim.SGD,)
        elif isinstance(stepper, VectorAdam):
            allowed = ADAM_FAMILY
        if allowed is not None and type(optimizer) not in allowed:
            names = " or ".join(t.__name__ for t in allowed)
            raise TypeError(
                f"{_FUNC}: the ensemble steps its members with the vectorised {names} step, "
                f"so 'optimizer' must be one of {[t.__name__ for t in allowed]}, got "
                f"{describe(optimizer)}"
            )
        groups = self.optimizers[0].param_groups
        if len(optimizer.param_groups) != len(groups):
            raise ValueError(
                f"{_FUNC}: 'optimizer' has {len(optimizer.param_groups)} param groups, the "
                f"members' optimizers have {len(groups)}; group the parameters alike"
            )

    @torch.no_grad()
    def _install(
        self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer, hparams: dict[str, Any]
    ) -> None:
        ensemble = self.ensemble
        for slab in ensemble._slabs:
            getter = model.get_buffer if slab.group == -1 else model.get_parameter
            for i, name in enumerate(slab.names):
                slab.data[k, slab.offsets[i] : slab.offsets[i] + slab.numels[i]].copy_(
                    getter(name).detach().reshape(-1)
                )
            slab.attach(model, k)
            if slab.grad is not None:
                slab.grad[k].zero_()
        members = list(ensemble._members)
        members[k] = model
        ensemble._members = tuple(members)
        model.train(ensemble.training)
        self.optimizers[k] = optimizer
        self.settings[k] = hparams
        ensemble._unfreeze(k)
        self.stepper.restart(k, model, optimizer)
