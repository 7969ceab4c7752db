"""``fit_stream``: a Lightning ``Trainer.fit`` run as a pulled stream of per-epoch events."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerStatus

from fitstream import Event
from fitstream._internal.checks import describe
from fitstream.bridge import Emitter, PushStream

from ._distributed import agree_on_failure, agree_to_stop
from ._epoch_events import EpochEvents, append_callback, remove_callback
from ._exclusive import EntryGuard
from ._stopping import Limits, stop_at_this_epoch
from ._strategies import check_streamable

__all__ = ["fit_stream"]

_BUSY = (
    "a fit_stream on this trainer is still open (its fit is paused between epochs, or "
    "running); one stream or fit per Trainer at a time. Finish or close that stream first "
    "(events.close(), or leave its `with` block), or use another Trainer"
)

_streaming: weakref.WeakSet[Trainer] = weakref.WeakSet()
_streaming_lock = threading.Lock()


class _StreamEvents(EpochEvents):
    """Hands each epoch's event to the consumer and stops the Trainer when the consumer stops."""

    def __init__(self, emit: Emitter[Event]) -> None:
        super().__init__()
        self._emit = emit

    def check(self) -> None:
        self._emit.check()

    def on_event(self, trainer: Trainer, event: Event) -> None:
        try:
            wants_more = self._emit(event)  # paused here while the consumer holds the event
        except BaseException:
            agree_on_failure(trainer, func="fit_stream")  # the other ranks wait at this boundary
            raise
        if agree_to_stop(trainer, not wants_more, func="fit_stream"):
            stop_at_this_epoch(trainer)


def _check_arguments(trainer: object, model: object, datamodule: object) -> None:
    if not isinstance(trainer, Trainer):
        raise TypeError(
            f"fit_stream: 'trainer' must be a lightning.pytorch.Trainer, got {describe(trainer)}"
        )
    module = getattr(model, "_orig_mod", model)  # a torch.compile'd LightningModule is fine
    if not isinstance(module, LightningModule):
        raise TypeError(f"fit_stream: 'model' must be a LightningModule, got {describe(model)}")
    if datamodule is not None and not isinstance(datamodule, LightningDataModule):
        raise TypeError(
            "fit_stream: 'datamodule' must be a LightningDataModule or None, "
            f"got {describe(datamodule)}"
        )
    check_streamable(trainer, "fit_stream")
    with _streaming_lock:
        busy = trainer in _streaming
    if busy or trainer.state.status == TrainerStatus.RUNNING:
        raise RuntimeError(
            "fit_stream: this trainer is already running (another fit_stream or fit is in "
            "progress); close the first stream, or leave its `with` block, before starting "
            "another on the same trainer"
        )


def fit_stream(  # noqa: PLR0917 (the positional parameters of Trainer.fit, mirrored)
    trainer: Trainer,
    model: LightningModule,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    datamodule: LightningDataModule | None = None,
    ckpt_path: str | None = None,
) -> PushStream[Event]:
    """Run ``trainer.fit(model, ...)`` as an iterator of one event per finished epoch.

    The arguments are those of :meth:`lightning.pytorch.Trainer.fit`; the module, data,
    callbacks, loggers, precision and strategy stay Lightning's. Nothing runs until the first
    ``next()``. Then ``fit`` runs in a worker thread and pauses after each epoch (after its
    validation, the module's hooks, ``EarlyStopping`` and ``ModelCheckpoint``) until the
    consumer asks for the next event, so the consumer may evaluate, snapshot or change the
    model and its optimizers while it holds one.

    Each event holds ``step`` (completed epochs, from 1), ``global_step``, ``train_loss``, every
    entry of ``trainer.callback_metrics`` as a ``float`` under its logged name (validation
    metrics only in epochs where validation ran), ``train_time_sec``, ``lr`` (the learning rate
    the epoch trained with: a ``float`` when ``trainer.optimizers`` have one param group in
    all, else a list with one per group, in order), ``model`` (the LightningModule) and
    ``trainer``. ``train_loss`` is the logged ``train_loss`` if the module
    logs one, else the mean of the losses ``training_step`` returned during the epoch.

    Stopping: when the consumer stops (``break``, ``itertools.islice``, ``early_stop``,
    ``close()``, or dropping the stream), training ends at that epoch boundary, even below
    ``min_epochs``/``min_steps`` (restored afterwards), and Lightning's normal end of ``fit``
    runs. When the Trainer stops by itself (``max_epochs``, ``max_steps``, ``max_time``,
    ``EarlyStopping``) the stream ends after the last event. An exception in training is
    raised from ``next()`` unchanged. Use the stream as a context manager to have an exception
    in your loop (or ``KeyboardInterrupt``) stop training at once and mark the run failed the
    Lightning way (``on_exception`` hooks, loggers finalised as ``"failed"``), also when the
    loop runs over ``pipe(events, ...)``; the exception then reaches you unchanged and the
    Python session survives.

    A failure on the consumer's side (Ctrl-C, an exception in the ``with`` block or in a stage)
    stops training by raising :class:`fitstream.bridge.StreamAborted` inside it, so that is
    what the callbacks' ``on_exception`` receive; the consumer's exception (the
    ``KeyboardInterrupt`` for Ctrl-C) is its ``reason``. A callback that saves a checkpoint on
    Ctrl-C tests ``isinstance(exception, StreamAborted)`` and looks at ``exception.reason``.

    The stream tells how many epochs it still expects (``operator.length_hint``): the
    Trainer's ``max_epochs`` less the epochs done, none without a limit in epochs. A
    :func:`fitstream.progress` bar reads it as its total, with the time left.

    One stream or fit per Trainer at a time: while the stream is open (paused at an event
    included), ``trainer.fit``, ``validate``, ``test`` and ``predict`` raise ``RuntimeError``
    at once and leave the stream as it was.

    Under ``strategy="ddp"`` launched by ``torchrun`` every process runs the same stream; a stop
    decided in any process stops all of them at the same epoch. When one process's consumer
    fails (an exception in its ``with`` block or its stages), that process ends with its own
    error and every other one with ``fitstream_lightning.OtherRankFailed`` at the same epoch
    boundary, never with a transport error or a hang.

    Args:
        trainer: A configured :class:`lightning.pytorch.Trainer`.
        model: The :class:`lightning.pytorch.LightningModule` to fit.
        train_dataloaders: As for ``Trainer.fit``.
        val_dataloaders: As for ``Trainer.fit``.
        datamodule: As for ``Trainer.fit``.
        ckpt_path: As for ``Trainer.fit``.

    Returns:
        A :class:`fitstream.bridge.PushStream` of events: an iterator with ``close()`` that is
        also a context manager.

    Raises:
        TypeError: ``trainer``, ``model`` or ``datamodule`` has the wrong type.
        ValueError: The strategy runs ``fit`` in child processes (``ddp_spawn``,
            ``ddp_notebook``); use ``strategy="ddp"`` with ``torchrun`` instead.
        RuntimeError: The trainer is already streaming or fitting.

    Example:
        >>> from itertools import islice
        >>> from lightning.pytorch.demos.boring_classes import BoringModel
        >>> trainer = Trainer(
        ...     max_epochs=10, limit_train_batches=4, limit_val_batches=2, logger=False,
        ...     accelerator="cpu", devices=1, enable_checkpointing=False,
        ...     enable_progress_bar=False, enable_model_summary=False,
        ... )
        >>> with fit_stream(trainer, BoringModel()) as events:
        ...     for event in islice(events, 3):
        ...         print(event["step"], event["global_step"], event["train_loss"] > 0)
        1 4 True
        2 8 True
        3 12 True
        >>> trainer.current_epoch  # stopped at the consumer's epoch, not at max_epochs
        3
    """
    _check_arguments(trainer, model, datamodule)
    fit_kwargs: dict[str, Any] = {
        "train_dataloaders": train_dataloaders,
        "val_dataloaders": val_dataloaders,
        "datamodule": datamodule,
        "ckpt_path": ckpt_path,
    }

    def run(emit: Emitter[Event]) -> None:
        with _streaming_lock:
            if trainer in _streaming:
                raise RuntimeError(
                    "fit_stream: this trainer started streaming in another fit_stream; close "
                    "that stream before iterating this one"
                )
            _streaming.add(trainer)
        try:
            _fit_with_events(trainer, model, fit_kwargs, emit)
        finally:
            with _streaming_lock:
                _streaming.discard(trainer)

    def expected() -> int | None:  # what a progress bar's total reads: the epochs to go
        limit = getattr(trainer.fit_loop, "max_epochs", None)
        if not isinstance(limit, int) or limit < 0:  # -1 or None: no limit in epochs
            return None
        return limit - int(trainer.current_epoch)

    return PushStream(run, name="fit_stream", expected=expected)


def _fit_with_events(
    trainer: Trainer, model: LightningModule, fit_kwargs: dict[str, Any], emit: Emitter[Event]
) -> None:
    """Body of the worker thread: ``trainer.fit`` with the event callback attached.

    While it runs (paused at an epoch included), the trainer's own ``fit``, ``validate``,
    ``test`` and ``predict`` raise at once instead of corrupting this fit.
    """
    fit = trainer.fit  # taken before the guard shadows it
    events = _StreamEvents(emit)
    limits = Limits(trainer)
    with EntryGuard(trainer, _BUSY):
        append_callback(trainer, events)
        try:
            fit(model, **fit_kwargs)
        finally:
            events.detach(trainer)
            remove_callback(trainer, events)
            limits.restore(trainer)
