"""Continue a run if its checkpoint exists, else start it: the :func:`resumable` stage.

One stage, put right after the source, does what :func:`fitstream.checkpoint` and
:func:`fitstream.resume` do when wired by hand: on the stream's start it loads the file (if
there is one) into the model, the optimizer, the random generators and the stateful stages,
numbers the events on from the saved step, saves the run between epochs, and ends the stream
when the run's total number of epochs is reached.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .._internal.checks import check_positive_int, describe
from .._internal.members import is_ensemble
from .._internal.starts import frozen_at_start
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._restoring import restore_file
from ._stateful import Stateful
from .checkpointing import (
    _check_generator,
    _check_path,
    _check_stages,
    _Options,
    saved_stream,
)

__all__ = ["resumable"]

_log = logging.getLogger("fitstream")


def _check_model(model: object, *, func: str) -> Any:
    if is_ensemble(model):
        return list(model.members)
    if isinstance(model, list | tuple) and model:
        for position, member in enumerate(model):
            if not callable(getattr(member, "load_state_dict", None)):
                raise TypeError(
                    f"{func}: model[{position}] must be an nn.Module, got {describe(member)}"
                )
        return list(model)
    if not callable(getattr(model, "load_state_dict", None)):
        raise TypeError(
            f"{func}: 'model' must be the nn.Module the source trains (an Ensemble or its "
            f"list of members for ensemble_stream), got {describe(model)}"
        )
    return model


def _check_optimizer(optimizer: object, *, func: str) -> Any:
    optimizers = list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
    for opt in optimizers or [optimizer]:
        if not callable(getattr(opt, "load_state_dict", None)):
            raise TypeError(
                f"{func}: 'optimizer' must be the torch optimizer the source steps (or the "
                f"list of them an ensemble's events hold), got {describe(opt)}"
            )
    return optimizer


@stage_factory
def resumable(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any,
    *,
    epochs: int | None = None,
    stages: Sequence[Stateful] = (),
    every: int = 1,
    generator: torch.Generator | None = None,
) -> Stage:
    """Continue the run saved at ``path`` if the file exists, else start it; save as it goes.

    Put it right after the source, built with no ``step_offset``. When the stream starts,
    before the first epoch trains, it loads ``path`` (if it exists) into ``model``,
    ``optimizer``, the random generators (and ``generator``) and each stage in ``stages``.
    Its events are numbered on from the saved step: a run saved after epoch 4 continues at
    step 5, and every later stage sees the step a never-interrupted run would have had. It
    saves the run every ``every`` events, on the last one, and when the stream is closed
    (``take``, an ``early_stop`` later on, ``break``), as :func:`fitstream.checkpoint` does, so
    one script serves the first start and every restart, even after ``kill -9``. With
    ``epochs``, the stream ends once ``step`` reaches it: the run's total, not the epochs left.

    It tells the stages and sinks after it nothing else of a restart: they see the steps
    numbered on. :func:`fitstream.collect_jsonl` (to a path) and
    :func:`fitstream.log_tensorboard` read a first step above 1 as a continued run and keep
    one record, each step once: the lines or points the killed run wrote from that step on
    are dropped.

    The file is :func:`fitstream.checkpoint`'s, so :func:`fitstream.resume` reads it too. The
    saving happens when the event after a saved one is asked for, once every later stage has
    finished with the saved one; stages that read ahead of the consumer are not supported.

    Args:
        path: The checkpoint file to continue from and to save to.
        model: The model the source trains (for ``ensemble_stream``, the :class:`Ensemble`
            or its list of member modules).
        optimizer: The optimizer the source steps (for an ensemble, the list its events hold
            under ``"optimizer"``).
        epochs: The run's total number of epochs, an int >= 1; ``None`` leaves the end to a
            later stage. Give it here rather than a ``take(n)``, which counts from the restart.
        stages: The stateful stages of the pipeline (``early_stop``, ``ema``, ``best_model``,
            ``reduce_lr_on_plateau``), in the same order each time.
        every: Save after every ``every``-th event; an int >= 1.
        generator: The ``generator`` given to the source for shuffling, if any.

    Returns:
        A stage for :func:`fitstream.pipe`; ``resumable(events, path, ...)`` returns the stream.

    Raises:
        TypeError: At the call, for arguments of the wrong type; while iterating, for a
            Lightning stream (resume a Trainer with ``fit_stream(..., ckpt_path=)``).
        ValueError: At the call, for ``epochs`` or ``every`` < 1; while iterating, for a
            source with a ``step_offset``, or a file that does not match the run.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import torch
        >>> from torch import nn
        >>> from fitstream import epoch_stream, pipe
        >>> path = Path(tempfile.mkdtemp()) / "run.ckpt"
        >>> X = torch.randn(32, 2)
        >>> y = X.sum(1, keepdim=True)
        >>> def session(epochs_this_time):
        ...     model = nn.Linear(2, 1)
        ...     opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ...     events = pipe(
        ...         epoch_stream((X, y), model, opt, nn.MSELoss(), batch_size=8),
        ...         resumable(path, model, opt, epochs=5),
        ...     )
        ...     return [ev["step"] for _, ev in zip(range(epochs_this_time), events)]
        >>> session(2), session(10)  # interrupted after 2 epochs, then continued to the end
        ([1, 2], [3, 4, 5])
    """
    func = "resumable"
    target = _check_path(path, func=func, written=True)
    members = _check_model(model, func=func)
    optimizer = _check_optimizer(optimizer, func=func)
    check_positive_int(epochs, func=func, arg="epochs", allow_none=True)
    check_positive_int(every, func=func, arg="every")
    restored = _check_stages(stages, func=func)
    shuffle = _check_generator(generator, func=func)
    # An ensemble is saved from its events' Ensemble, which knows the frozen members.
    saved_model = None if isinstance(members, list) else members
    options = _Options(model=saved_model, optimizer=optimizer, generator=shuffle, stages=restored)

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        start = 0
        if target.exists():
            where = restore_file(target, members, optimizer, restored, shuffle, func=func)
            start = where.step
            if where.frozen:
                _freeze_at_start(events, where.frozen, func=func)
            _log.info("resumable: continuing %s from step %d", target, start)
        if epochs is not None and start >= epochs:
            with upstream(events):
                return  # already done: nothing to train; the source is closed untouched
        numbered = _numbered_on(events, start, epochs, func=func)
        yield from saved_stream(numbered, target, options, every)

    return stage


def _numbered_on(
    events: Iterable[dict[str, Any]], start: int, epochs: int | None, *, func: str
) -> Iterator[dict[str, Any]]:
    """The source's events with their steps counted on from ``start``, up to ``epochs``."""
    with upstream(events) as it:
        for count, raw in enumerate(it, start=1):
            if count == 1:
                _check_first(raw, func=func)
            event = {**raw, "step": raw["step"] + start}
            yield event
            if epochs is not None and event["step"] >= epochs:
                return  # the run's total: the next epoch is never asked for


def _freeze_at_start(events: object, members: list[int], *, func: str) -> None:
    pending = frozen_at_start(events)
    if pending is None:
        raise ValueError(
            f"{func}: the checkpoint has the ensemble members {members} frozen, but the "
            f"stream before resumable is not an ensemble_stream that can start with them "
            f"frozen; put resumable right after ensemble_stream(...)"
        )
    pending.extend(members)


def _check_first(event: dict[str, Any], *, func: str) -> None:
    if "trainer" in event:
        raise TypeError(
            f"{func}: a Lightning stream is resumed by its Trainer: use checkpoint(path) "
            f"and fit_stream(..., ckpt_path=path), with resume(path, stages=...) for the stages"
        )
    step = event.get("step")
    if step != 1:
        raise ValueError(
            f"{func}: the source's first event has step {step!r}, not 1; put resumable right "
            f"after the source and leave out its step_offset: resumable numbers the steps on "
            f"from the checkpoint itself"
        )
