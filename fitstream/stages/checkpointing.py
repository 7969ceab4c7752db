"""Exact resume: the :func:`checkpoint` stage writes a run's whole state, :func:`resume` loads it.

One file holds what the next epoch depends on: the model's and the optimizers' ``state_dict``,
the random number generators (torch's CPU and CUDA generators, Python's ``random``, the
shuffle ``generator`` given to :func:`fitstream.epoch_stream`), the ``step`` reached, and the
state of the stateful stages given (``early_stop``, ``ema``, ``best_model``,
``reduce_lr_on_plateau``). It is written between two epochs, after every stage and the
consumer have finished with the event, so a run resumed from it continues as if it had
never stopped.

For a Lightning event (one with a ``trainer``) the file is the Trainer's own checkpoint, with
the stages' states and the random generators added; resume training from it with
``fit_stream(..., ckpt_path=path)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._internal.checks import check_bool, check_positive_int, describe
from .._internal.members import ensemble_of
from .._internal.optimizers import check_optimizer_arg, event_optimizers
from .._internal.paths import check_file_target
from .._internal.source_state import saved_states
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._checkpoint_file import (
    FORMAT,
    compact,
    rng_states,
    write_atomically,
    write_lightning,
)
from ._restoring import restore_file, stage_name
from ._stateful import Stateful

__all__ = ["checkpoint", "resume"]


@dataclass(frozen=True)
class _Options:
    model: Any
    optimizer: Any
    generator: torch.Generator | None
    stages: tuple[Stateful, ...]


def _check_path(path: object, *, func: str, written: bool = False) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{func}: 'path' must be a file path (str or os.PathLike), got {describe(path)}"
        )
    target = Path(os.fspath(path))
    if written:  # a folder, or a path under a file, is refused now, not at the first save
        check_file_target(target, func=func, arg="path")
    elif target.is_dir():
        raise IsADirectoryError(
            f"{func}: path {str(target)!r} is a folder; give the checkpoint file in it"
        )
    return target


def _check_stages(stages: object, *, func: str) -> tuple[Stateful, ...]:
    if not isinstance(stages, Sequence) or isinstance(stages, str):
        raise TypeError(
            f"{func}: 'stages' must be a list of stateful stages (early_stop, ema, best_model, "
            f"reduce_lr_on_plateau), got {describe(stages)}"
        )
    for position, stage in enumerate(stages):
        if not isinstance(stage, Stateful):
            raise TypeError(
                f"{func}: stages[{position}] has no get_state()/set_state(), so its progress "
                f"cannot be saved; give the stateful stages (early_stop, ema, best_model, "
                f"reduce_lr_on_plateau), got {describe(stage)}"
            )
    return tuple(stages)


def _check_generator(generator: object, *, func: str) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{func}: 'generator' must be the torch.Generator given to epoch_stream, or None, "
            f"got {describe(generator)}"
        )
    return generator


def _write(path: Path, event: Mapping[str, Any], options: _Options) -> None:
    optimizer, generator, stages = options.optimizer, options.generator, options.stages
    saved_stages = [{"name": stage_name(s), "state": s.get_state()} for s in stages]
    if "trainer" in event and optimizer is None and options.model is None:
        write_lightning(path, event, saved_stages, generator)
        return
    model = event.get("model") if options.model is None else options.model
    ensemble = ensemble_of(event) if options.model is None else None
    active: list[bool] | None = None
    if ensemble is not None:
        model_state: Any = [member.state_dict() for member in ensemble.members]
        active = [bool(on) for on in ensemble.active]  # with freezes made after the event
    elif model is not None and callable(getattr(model, "state_dict", None)):
        model_state = model.state_dict()
    else:
        raise TypeError(
            f"checkpoint: event['model'] must be a module with a state_dict(), got "
            f"{describe(model)}"
        )
    optimizers = event_optimizers(event, optimizer, func="checkpoint")
    content = {
        "format": FORMAT,
        "step": event.get("step"),
        "model": model_state,
        "optimizers": [compact(o.state_dict()) for o in optimizers],
        "optimizer_kinds": [type(o).__name__ for o in optimizers],  # named when refused
        # each optimizer's per-step scheduler and GradScaler, when its source has them
        "source_state": [saved_states(o) for o in optimizers],
        "rng": rng_states(generator),
        "stages": saved_stages,
        "active": active,
    }
    write_atomically(path, content)


@stage_factory
def checkpoint(
    path: str | os.PathLike[str],
    *,
    every: int = 1,
    stages: Sequence[Stateful] = (),
    model: Any = None,
    optimizer: Any = None,
    generator: torch.Generator | None = None,
) -> Stage:
    """Save everything a run needs to continue exactly, to one file, every ``every`` events.

    The file is written when the consumer asks for the event after a saved one (or when the
    stream is closed after it), so every stage after this one and the consumer have finished
    with it and the next epoch has not started: it holds the state *between* two epochs. It is
    written to a temporary file first and renamed over ``path``, so a crash never leaves a
    half-written checkpoint. Missing folders are created. Put the stage after the stages that
    add the keys your run depends on; a stateful stage anywhere in the pipeline is saved if it
    is in ``stages``. Events pass through unchanged.

    The file holds ``event["model"].state_dict()`` (each member's, for an ensemble), the
    optimizers' ``state_dict`` (``optimizer`` if given, else the event's: ``event["optimizer"]``
    or ``event["trainer"].optimizers``), the random generators (torch's CPU and, if in use,
    CUDA generators, Python's ``random`` and ``generator``), the event's ``step``, each
    stage's ``get_state()``, and the state of what the source steps each optimizer with: the
    per-step scheduler given as ``schedulers=`` and the ``GradScaler`` of
    ``autocast=torch.float16``. :func:`resume` loads it.

    For a Lightning event (it has a ``trainer``, and no ``optimizer`` is given) the file is
    ``trainer.save_checkpoint``'s, with the stages' states and the random generators under the
    key ``"fitstream"``: resume the Trainer with ``fit_stream(..., ckpt_path=path)`` and the
    stages with ``resume(path, stages=...)``.

    Args:
        path: The checkpoint file; replaced at each save.
        every: Save after every ``every``-th event (by its place in the stream); an int >= 1.
            The last event is saved too, whether the stream is closed after it or ends.
        stages: The stateful stages whose progress to save, in an order that :func:`resume`
            is given again.
        model: The model to save, instead of the event's (for a source whose events hold none).
        optimizer: The optimizer (or a list of them) to save, instead of the event's.
        generator: The ``generator`` given to :func:`fitstream.epoch_stream` for shuffling.

    Returns:
        A stage for :func:`fitstream.pipe`; ``checkpoint(events, path, ...)`` returns the stream.

    Raises:
        TypeError: At the call, for arguments of the wrong type.
        ValueError: At the call, for ``every < 1``.
        KeyError: While iterating, for an event without ``model`` or optimizers.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from torch import nn
        >>> from fitstream import epoch_stream, pipe, take
        >>> path = Path(tempfile.mkdtemp()) / "demo.ckpt"
        >>> X = torch.randn(32, 2)
        >>> y = X.sum(1, keepdim=True)
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> events = pipe(
        ...     epoch_stream((X, y), model, opt, nn.MSELoss(), batch_size=8),
        ...     checkpoint(path, every=2),
        ...     take(3),
        ... )
        >>> [ev["step"] for ev in events]
        [1, 2, 3]
        >>> resume(path, nn.Linear(2, 1))  # the step to continue from
        3
    """
    func = "checkpoint"
    target = _check_path(path, func=func, written=True)
    check_positive_int(every, func=func, arg="every")
    if model is not None and not callable(getattr(model, "state_dict", None)):
        raise TypeError(f"{func}: 'model' must be an nn.Module or None, got {describe(model)}")
    check_optimizer_arg(optimizer, func=func, needs=("state_dict",))
    options = _Options(
        model=model,
        optimizer=optimizer,
        generator=_check_generator(generator, func=func),
        stages=_check_stages(stages, func=func),
    )

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return saved_stream(events, target, options, every)

    return stage


def saved_stream(
    events: Iterable[dict[str, Any]], target: Path, options: _Options, every: int
) -> Iterator[dict[str, Any]]:
    """Pass ``events`` on, saving the run after every ``every``-th, the last, and on close."""
    unsaved: dict[str, Any] | None = None
    with upstream(events) as it:
        for count, event in enumerate(it, start=1):
            try:
                yield event
            except GeneratorExit:
                # Closed from downstream (take, early_stop, break): between two epochs.
                _write(target, event, options)
                raise
            unsaved = event
            if count % every == 0:
                _write(target, event, options)
                unsaved = None
    if unsaved is not None:  # the upstream ended (e.g. an early_stop before this stage)
        _write(target, unsaved, options)


def resume(
    path: str | os.PathLike[str],
    model: Any = None,
    optimizer: Any = None,
    *,
    stages: Sequence[Stateful] = (),
    generator: torch.Generator | None = None,
    missing_ok: bool = False,
) -> int:
    """Load a :func:`checkpoint` file into fresh objects; return the step to continue from.

    Build the model, the optimizer, the shuffle ``generator`` and the pipeline's stateful
    stages as the first run did (a new process has only new objects), call ``resume``, then
    pass the returned step to :func:`fitstream.epoch_stream` as ``step_offset``. The model and
    optimizer get their saved ``state_dict``, the random generators their saved state, and
    each stage in ``stages`` (same order as given to :func:`checkpoint`) its saved progress,
    which it continues from when its stream starts. A per-step scheduler (``schedulers=``)
    and a float16 ``GradScaler`` saved with an optimizer get their state when the source is
    built over that optimizer (at once, if it is built already), and the scheduler's
    optimizer is set to the rate the saved run was at.

    For a file written on a Lightning stream, ``model`` and ``optimizer`` are left out: the
    Trainer restores them with ``fit_stream(..., ckpt_path=path)``; ``resume`` restores the
    stages and the random generators.

    Args:
        path: The file :func:`checkpoint` wrote.
        model: The model (an ensemble's list of member modules) to load the weights into.
        optimizer: The optimizer (or a list of them, as saved) to load; ``None`` skips it.
        stages: The stateful stages, as given to :func:`checkpoint`.
        generator: The ``generator`` for :func:`fitstream.epoch_stream`, if the run had one.
        missing_ok: Whether a missing file means a fresh start (``resume`` returns 0 and
            changes nothing) rather than an error.

    Returns:
        The ``step`` of the saved event: the number of epochs already done.

    Raises:
        FileNotFoundError: ``path`` does not exist (unless ``missing_ok``).
        ValueError: The file is not a FitStream checkpoint, or ``stages`` (or optimizers)
            differ in number or kind from those saved.
        TypeError: For arguments of the wrong type.

    Example:
        >>> resume("no-such-run.ckpt", missing_ok=True)
        0
    """
    func = "resume"
    check_bool(missing_ok, func=func, arg="missing_ok")
    source = _check_path(path, func=func)
    restored = _check_stages(stages, func=func)
    shuffle = _check_generator(generator, func=func)
    if missing_ok and not source.exists():
        return 0
    where = restore_file(source, model, optimizer, restored, shuffle, func=func)
    if where.frozen:
        warnings.warn(
            f"{func}: the checkpoint has the ensemble members {where.frozen} frozen, which "
            f"resume cannot freeze in an ensemble_stream not yet built: they will train on; "
            f"use resumable(...) right after ensemble_stream to continue them frozen",
            UserWarning,
            stacklevel=2,
        )
    return where.step
