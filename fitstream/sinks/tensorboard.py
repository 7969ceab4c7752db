"""Log a stream's metrics to TensorBoard: the :func:`log_tensorboard` stage and its sink form.

Needs the optional dependency ``tensorboard`` (``pip install 'fitstream[tensorboard]'``); it is
imported when :func:`log_tensorboard` or :func:`collect_tensorboard` is called.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._internal.checks import check_positive_int
from .._internal.lookup import as_float
from .._internal.optional import require
from .._internal.paths import check_folder_target
from .._internal.values import scalar_value
from ..events import Stage
from ..pipeline import check_stream, stage_factory, upstream
from ._records import check_key_names, unseen_keys_error
from ._tensorboard_summary import (
    MetricHistory,
    check_hparams,
    custom_scalars_layout,
    write_hparams,
)

__all__ = ["collect_tensorboard", "log_tensorboard"]


@dataclass(frozen=True)
class _Options:
    caller: str
    log_dir: str | None
    writer: Any
    keys: tuple[str, ...] | None
    every: int
    hparams: dict[str, bool | int | float | str] | None


def _check_options(
    caller: str, *, log_dir: object, writer: object, keys: object, every: object, hparams: object
) -> _Options:
    require("tensorboard", "tensorboard", feature=caller)
    require("torch.utils.tensorboard", "tensorboard", feature=caller)
    if log_dir is not None and writer is not None:
        raise ValueError(
            f"{caller}: pass log_dir or writer, not both (got log_dir={log_dir!r:.80} and "
            f"writer={writer!r:.80})"
        )
    if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
        raise TypeError(
            f"{caller}: log_dir must be a folder path (str or os.PathLike) or None, got "
            f"{type(log_dir).__name__}: {log_dir!r:.80}"
        )
    if log_dir is not None:
        check_folder_target(Path(log_dir), func=caller, arg="log_dir")
    needed = ["add_scalar", "add_custom_scalars", "flush"]
    if hparams is not None:
        needed.append("_get_file_writer")
    if writer is not None and not all(callable(getattr(writer, m, None)) for m in needed):
        raise TypeError(
            f"{caller}: writer must be an open torch.utils.tensorboard.SummaryWriter (e.g. a "
            f"Lightning TensorBoardLogger's .experiment), got {type(writer).__name__}: "
            f"{writer!r:.80}"
        )
    check_positive_int(every, func=caller, arg="every")
    return _Options(
        caller=caller,
        log_dir=None if log_dir is None else str(os.fspath(log_dir)),
        writer=writer,
        keys=check_key_names(keys, name="keys", caller=caller),
        every=every,  # type: ignore[arg-type]
        hparams=check_hparams(hparams, caller=caller),
    )


class _Run:
    """The writer of one pass over a stream, and what has been logged to it."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        if options.writer is not None:
            self.writer, self.owned = options.writer, False
        else:
            tensorboard = require("torch.utils.tensorboard", "tensorboard", feature=options.caller)
            self.writer, self.owned = tensorboard.SummaryWriter(log_dir=options.log_dir), True
        self.count = 0
        self.last_step = 0
        self.pending: tuple[int, dict[str, float]] | None = None
        self.tags: set[str] = set()
        self.layout: dict[str, Any] = {}
        self.history = MetricHistory()
        self.keys_had: set[str] = set()  # with keys=: every key any event had

    def never_had(self) -> KeyError | None:
        """The error for names in ``keys`` that no event had (a typo, usually), else None."""
        keys = self.options.keys or ()
        return unseen_keys_error(self.options.caller, "keys", keys, self.keys_had, self.count)

    def log_dir(self) -> str:
        return str(self.writer.get_logdir())

    def step_of(self, event: Mapping[str, Any]) -> int:
        if "step" not in event:
            return self.count
        step = scalar_value(event["step"])
        if step is None or isinstance(step, bool) or not float(step).is_integer():
            raise TypeError(
                f"{self.options.caller}: an event's 'step' must be an int (it is the x-axis), "
                f"got {type(event['step']).__name__}: {event['step']!r:.80}"
            )
        return int(step)

    def scalars_of(self, event: Mapping[str, Any]) -> dict[str, float]:
        keys = self.options.keys
        if keys is None:
            found = ((key, scalar_value(value)) for key, value in event.items() if key != "step")
            return {
                k: as_float(v, k, func=self.options.caller)
                for k, v in found
                if v is not None and not isinstance(v, bool)
            }
        self.keys_had.update(event)
        scalars: dict[str, float] = {}
        for key in keys:
            if key not in event:  # e.g. val_loss in an epoch without validation
                continue
            value = scalar_value(event[key])
            if value is None:
                raise TypeError(
                    f"{self.options.caller}: keys names {key!r}, whose value is not a number: "
                    f"got {type(event[key]).__name__}: {event[key]!r:.80}"
                )
            scalars[key] = as_float(value, key, func=self.options.caller)
        return scalars

    def see(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        step = self.step_of(event)
        scalars = self.scalars_of(event)
        self.history.update(scalars)
        self.last_step = step
        if (self.count - 1) % self.options.every == 0:
            self.write(step, scalars)
            self.pending = None
        else:
            self.pending = (step, scalars)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if not self.tags.issuperset(scalars):
            self.tags.update(scalars)
            layout = custom_scalars_layout(self.tags)
            if layout != self.layout:
                self.writer.add_custom_scalars(layout)
                self.layout = layout
        self.writer.flush()

    def finish(self) -> None:
        # A writer passed in may have been closed by its owner before the stream ended (a
        # Lightning TensorBoardLogger closes its .experiment when fit ends, just before the
        # stream does). The last writes below reopen it; close it again so that no reopened
        # event file is left behind.
        closed_by_owner = not self.owned and getattr(self.writer, "all_writers", True) is None
        try:
            if self.pending is not None:
                self.write(*self.pending)
                self.pending = None
            if self.options.hparams is not None:
                write_hparams(self.writer, self.options.hparams, self.history, self.last_step)
        finally:
            try:
                self.writer.flush()
            finally:
                if self.owned or closed_by_owner:
                    self.writer.close()


def _logged(
    events: Iterable[dict[str, Any]],
    options: _Options,
    on_open: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    run = _Run(options)
    try:
        if on_open is not None:
            on_open(run.log_dir())
        with upstream(events) as it:
            for event in it:
                run.see(event)
                yield event
        error = run.never_had()
        if error is not None:
            raise error
    except GeneratorExit:  # stopped early by the consumer: warn, an error here would be lost
        error = run.never_had()
        if error is not None:
            warnings.warn(error.args[0], UserWarning, stacklevel=2)
        raise
    finally:
        run.finish()


@stage_factory
def log_tensorboard(
    log_dir: str | os.PathLike[str] | None = None,
    *,
    writer: Any = None,
    keys: Sequence[str] | None = None,
    every: int = 1,
    hparams: Mapping[str, Any] | None = None,
) -> Stage:
    """Pass events through unchanged while writing their metrics to TensorBoard.

    Each event's numeric scalars (Python numbers, 0-d tensors, NumPy scalars; not ``step``,
    not bools unless named in ``keys``) are written as scalars at the event's ``step`` (the
    event's position in the stream when it has none), so the x-axis counts epochs. Tags that
    share a stem once their split is removed (``train_loss``/``val_loss``,
    ``train_acc``/``val_acc``; a leading or trailing ``train``, ``val``, ``valid``,
    ``validation`` or ``test``) also appear together on one chart in the Custom Scalars tab.
    Scalars are flushed after each logged event so TensorBoard shows the run live.

    The writer opens when the first event is requested. A writer opened here is flushed and
    closed however the stream ends (exhausted, closed early by ``take``/``early_stop``/
    ``break``, an exception, Ctrl-C); a writer passed in is flushed and left open (or closed
    again, if its owner closed it before the stream ended, as Lightning does at the end of fit).

    Args:
        log_dir: The run's folder; ``None`` (with no ``writer``) uses SummaryWriter's default,
            ``runs/<date>_<host>``.
        writer: An open ``SummaryWriter`` to write into instead, e.g. the ``.experiment`` of a
            Lightning ``TensorBoardLogger`` so the values land in Lightning's own run.
        keys: Log only these keys. An event may lack some of them (Lightning leaves
            ``val_loss`` out of epochs without validation); a key that no event of the whole
            stream had is a KeyError listing the keys the events had, raised when the stream
            ends (a UserWarning if the consumer stopped it early). Their values must be
            numbers (TypeError).
        every: Log every ``every``-th event (the 1st, ``every+1``-th, ...); the last event is
            always logged when the stream ends so the curves reach the final epoch.
        hparams: Hyperparameters of the run (numbers, strings, bools). When the stream ends
            they are written with ``final/<key>`` (last value) and ``best/<key>`` of every
            logged metric over all events: the minimum for keys containing ``loss``, ``err``,
            ``mse``, ``mae``, ``perplexity`` or ``time``, else the maximum. They fill the
            HParams tab, which compares the runs under one ``--logdir``.

    Returns:
        A stage for :func:`fitstream.pipe`; ``log_tensorboard(events, ...)`` returns the stream.

    Raises:
        ImportError: If tensorboard is not installed.
        ValueError: If both ``log_dir`` and ``writer`` are given, or ``keys`` is empty.
        TypeError: For a bad ``log_dir``, ``writer``, ``keys``, ``every`` or ``hparams`` (at
            the call); for an event whose ``step`` or named key is not a number (at that event).
        KeyError: At the end of the stream, if no event had a key named in ``keys``.

    Example:
        >>> import tempfile
        >>> from fitstream import pipe, collect
        >>> events = [{"step": s, "train_loss": 1 / s, "val_loss": 2 / s} for s in (1, 2, 3)]
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     history = collect(pipe(events, log_tensorboard(run_dir, hparams={"lr": 0.1})))
        >>> [ev["step"] for ev in history]
        [1, 2, 3]
    """
    options = _check_options(
        "log_tensorboard", log_dir=log_dir, writer=writer, keys=keys, every=every, hparams=hparams
    )

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return _logged(events, options)

    return stage


def collect_tensorboard(
    events: Iterable[dict[str, Any]],
    log_dir: str | os.PathLike[str] | None = None,
    *,
    writer: Any = None,
    keys: Sequence[str] | None = None,
    every: int = 1,
    hparams: Mapping[str, Any] | None = None,
) -> str:
    """Consume ``events``, writing their metrics to TensorBoard; the sink form of the stage.

    Same options and behaviour as :func:`log_tensorboard`, checked before anything is pulled.

    Returns:
        The run folder written to (useful with the default ``runs/...`` folder).

    Example:
        >>> import tempfile
        >>> events = [{"step": s, "train_loss": 1 / s} for s in (1, 2, 3)]
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     collect_tensorboard(events, run_dir) == run_dir
        True
    """
    check_stream(events, func="collect_tensorboard")
    options = _check_options(
        "collect_tensorboard",
        log_dir=log_dir,
        writer=writer,
        keys=keys,
        every=every,
        hparams=hparams,
    )
    opened: list[str] = []
    for _ in _logged(events, options, opened.append):
        pass
    return opened[0]
