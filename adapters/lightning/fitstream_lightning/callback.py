"""``StreamCallback``: FitStream stages inside an unchanged ``trainer.fit(...)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lightning.pytorch import LightningModule, Trainer

from fitstream import Event, Stage, pipe
from fitstream.bridge import Emitter, PushStream
from fitstream.pipeline import check_stages

from ._distributed import agree_on_failure, agree_to_stop
from ._epoch_events import EpochEvents
from ._exclusive import EntryGuard
from ._stopping import Limits, stop_at_this_epoch

__all__ = ["StreamCallback"]

_BUSY = (
    "this trainer's fit is paused while StreamCallback's stages run; one stream or fit per "
    "Trainer at a time. Use another Trainer in a stage"
)


def _drive(stages: tuple[Stage, ...], inbox: list[Event]) -> Callable[[Emitter[None]], None]:
    """The pipeline as a producer for :class:`PushStream`: it runs until it wants an event.

    The pipeline pulls from ``feed``, which yields the event the callback put in ``inbox``
    and then, when asked for another, pauses in ``emit`` until the next epoch has ended. So
    any stage works, including one that reads several events before it yields.
    """

    def run(emit: Emitter[None]) -> None:
        def feed() -> Iterator[Event]:
            while inbox:
                yield inbox.pop()
                if not emit(None):
                    return

        for _ in pipe(feed(), *stages):
            pass

    return run


class StreamCallback(EpochEvents):
    """A Lightning callback that pushes each epoch's event through ``pipe(events, *stages)``.

    For code whose ``trainer.fit(...)`` call cannot change (LightningCLI, shared scripts):
    add ``StreamCallback(...)`` to the Trainer's callbacks and the stages see the same events
    as :func:`fitstream_lightning.fit_stream` would give, one per finished epoch, after the
    epoch's validation, ``EarlyStopping`` and ``ModelCheckpoint``. When the pipeline ends (for
    example :func:`fitstream.early_stop` fires or :func:`fitstream.take` has its events), the
    Trainer stops at that epoch through ``trainer.should_stop`` (even below ``min_epochs``;
    restored afterwards) and ends ``fit`` normally. An exception in a stage fails the ``fit``
    with that exception. Under DDP the ranks agree, so all stop at the same epoch.

    Failures: the callbacks' ``on_exception`` receive the exception itself, as in any
    ``trainer.fit`` (a stage's error; ``KeyboardInterrupt`` on Ctrl-C, after which Lightning
    ends the process as usual), and the stages see :class:`fitstream.bridge.StreamAborted`
    with it in ``reason``. (Under :func:`fitstream_lightning.fit_stream`, a failure on the
    consumer's side reaches the callbacks as ``StreamAborted``; see there.) While the stages
    run, training is paused, and a stage that calls ``trainer.fit``, ``validate``, ``test`` or
    ``predict`` on the same Trainer gets a ``RuntimeError`` (one stream or fit per Trainer at
    a time).

    The stages run in a helper thread in lockstep with training (training is paused while they
    work), so a stage may read several events before it yields one. Sinks are closed when
    ``fit`` ends.

    Args:
        *stages: FitStream stages, e.g. ``early_stop(key="val_loss", patience=3)``.

    Raises:
        TypeError: A stage is not callable.

    Example:
        >>> from lightning.pytorch.demos.boring_classes import BoringModel
        >>> from fitstream import take, tap
        >>> steps = []
        >>> trainer = Trainer(
        ...     max_epochs=10, limit_train_batches=2, limit_val_batches=1, logger=False,
        ...     accelerator="cpu", devices=1, enable_checkpointing=False,
        ...     enable_progress_bar=False, enable_model_summary=False,
        ...     callbacks=[
        ...         StreamCallback(tap(lambda ev: steps.append(ev["step"])), take(2))
        ...     ],
        ... )
        >>> trainer.fit(BoringModel())
        >>> steps, trainer.current_epoch
        ([1, 2], 2)
    """

    def __init__(self, *stages: Stage) -> None:
        super().__init__()
        check_stages(stages, func="StreamCallback")
        self.stages = stages
        self._inbox: list[Event] = []
        self._pipeline: PushStream[None] | None = None
        self._ended = False
        self._limits: Limits | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the pipeline (in its helper thread, at the first event)."""
        self._close(trainer)
        self._inbox = []
        self._pipeline = PushStream(_drive(self.stages, self._inbox), name="StreamCallback")
        self._ended = False
        self._limits = Limits(trainer)

    def on_event(self, trainer: Trainer, event: Event) -> None:
        """Push ``event`` through the stages; stop the Trainer (on every rank) once they end."""
        if not self._ended and self._pipeline is not None:
            self._inbox.append(event)
            try:
                with EntryGuard(trainer, _BUSY):  # a stage must not start a fit of its own
                    next(self._pipeline)
            except StopIteration:
                self._ended = True
            except BaseException:
                agree_on_failure(trainer, func="StreamCallback")  # the others wait here
                raise
        if agree_to_stop(trainer, self._ended, func="StreamCallback"):
            stop_at_this_epoch(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the pipeline so its sinks finish; their errors fail the ``fit``."""
        self._close(trainer)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Close the pipeline if ``on_train_end`` did not run."""
        super().teardown(trainer, pl_module, stage)
        self._close(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Abort the pipeline: its stages see the failure, their sinks close."""
        super().on_exception(trainer, pl_module, exception)
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.abort(exception)
        self._restore(trainer)

    def _close(self, trainer: Trainer) -> None:
        pipeline, self._pipeline = self._pipeline, None
        try:
            if pipeline is not None:
                pipeline.close()  # sinks finish; an error of theirs fails the fit
        finally:
            self._restore(trainer)

    def _restore(self, trainer: Trainer) -> None:
        limits, self._limits = self._limits, None
        if limits is not None:
            limits.restore(trainer)
