"""The generator behind :func:`~fitstream.ensemble_stream`.

It builds the ensemble and its step at the first ``next()``, then trains one epoch per
``next()`` and yields its event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..._internal.optimizers import as_rate, hparams_of, learning_rate, mark_stepped
from ..._internal.source_state import attach
from ..._internal.train_checks import check_rates
from ...events import Event
from ..graphed.cuda import CudaGraphs
from ..graphed.ensemble_step import EnsembleStep
from ..graphed.steps import GraphedSteps
from ..step_options import StepOptions
from .adam import VectorAdam
from .epoch import EnsembleEpoch
from .links import check_links, keep_frozen_as_they_are
from .loop import EnsembleLoop
from .member_checks import check_hooks
from .optim import MemberSteps
from .replace import Replacer
from .sgd import VectorSGD
from .stacking import Ensemble

__all__ = ["train_epochs"]

_FUNC = "ensemble_stream"


def train_epochs(
    tensors: tuple[torch.Tensor, ...],
    members: list[nn.Module],
    optimizers: list[torch.optim.Optimizer],
    kind: str | None,
    loss_fn: Callable[..., torch.Tensor],
    *,
    batch_size: int,
    shuffle: bool,
    last_label: bool,
    generator: torch.Generator | list[torch.Generator] | None,
    constants: dict[str, Any],
    step_offset: int,
    cuda_graphs: bool,
    rows: list[torch.Tensor] | None,
    settings: list[dict[str, Any]] | None,
    frozen: list[int],
    options: StepOptions,
) -> Iterator[Event]:
    """Train the checked members, one epoch per ``next()`` (see ``ensemble_stream``)."""
    groups = [[_name_of(members[0], p) for p in g["params"]] for g in optimizers[0].param_groups]
    ensemble = Ensemble(members, _groups=groups)
    given = list(settings or [{} for _ in members])
    ensemble._hparams = lambda: [
        {**hparams_of(opt), **mine} for opt, mine in zip(optimizers, given, strict=True)
    ]
    stepper: VectorSGD | VectorAdam | MemberSteps
    if kind == "sgd":
        stepper = VectorSGD(ensemble, optimizers)
    elif kind == "adam":
        stepper = VectorAdam(ensemble, optimizers, device_cursor=cuda_graphs)
    else:
        stepper = MemberSteps(ensemble, optimizers)
    own_orders = generator if isinstance(generator, list) and shuffle else None
    ensemble._replacer = Replacer(
        ensemble, stepper, optimizers, given, graphed=cuda_graphs,
        scheduled=bool(options.schedulers), generators=own_orders,
    )  # fmt: skip
    loop = EnsembleLoop(ensemble, loss_fn, stepper, last_label, options=options)
    schedulers = options.schedulers or (None,) * len(optimizers)
    for opt, scheduler in zip(optimizers, schedulers, strict=True):
        attach(opt, scheduler=scheduler)  # fitstream.checkpoint saves it with the optimizer
    graphed: GraphedSteps | None = None
    if cuda_graphs:
        assert not isinstance(stepper, MemberSteps)  # refused at the call
        device = tensors[0].device
        own = rows is not None or (isinstance(generator, list) and shuffle)
        program = EnsembleStep(loop, stepper, device, tensors if own else None)
        graphed = GraphedSteps(program, func=_FUNC, cuda=CudaGraphs(device))
    run_epoch = EnsembleEpoch(
        tensors, loop, graphed, batch_size=batch_size, shuffle=shuffle, generator=generator,
        rows=rows,
    )  # fmt: skip
    for member in frozen:  # frozen in the run this one continues
        ensemble.freeze(member)
    clock = time.perf_counter
    step = step_offset
    while True:
        started = clock()
        check_links(ensemble, func=_FUNC)
        # what may have changed since the call: a rate set to a string, a hook added
        for k, opt in enumerate(optimizers):
            check_rates(opt, func=_FUNC, arg=f"optimizers[{k}]")
        check_hooks(list(ensemble.members), optimizers, vectorised=kind is not None, func=_FUNC)
        keep_frozen_as_they_are(ensemble)  # a load_state_dict into a frozen member stays
        ensemble.train()
        trained = list(ensemble.active)  # frozen while the consumer held the last event
        train_loss = run_epoch()
        if kind is not None:  # the vectorised step: no optimizers[k].step() was called
            for opt, on in zip(optimizers, trained, strict=True):
                if on:
                    mark_stepped(opt)
        elapsed = clock() - started
        step += 1
        yield Event(
            step=step,
            model=ensemble,
            optimizer=list(optimizers),
            train_loss=train_loss,
            train_time_sec=elapsed,
            lr=[_rate(opt, loop.rates[k]) for k, opt in enumerate(optimizers)],
            active=trained,
            **run_epoch.metrics,
            **constants,
        )


def _rate(optimizer: torch.optim.Optimizer, stepped: list[float] | None) -> Any:
    """A member's ``lr``: the rates its last scheduled step used, else its rate now."""
    return learning_rate([optimizer]) if stepped is None else as_rate(stepped)


def _name_of(model: nn.Module, param: torch.Tensor) -> str:
    return next(name for name, p in model.named_parameters() if p is param)
