"""Log a stream's metrics to TensorBoard: the :func:`log_tensorboard` stage and its sink form.

Needs the optional dependency ``tensorboard`` (``pip install 'fitstream[tensorboard]'``); it is
imported when :func:`log_tensorboard` or :func:`collect_tensorboard` is called.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..events import Stage
from ..pipeline import check_stream, stage_factory, upstream
from ._tensorboard_options import Options, check_options
from ._tensorboard_run import Run

__all__ = ["collect_tensorboard", "log_tensorboard"]


def _logged(
    events: Iterable[dict[str, Any]],
    options: Options,
    on_open: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    run = Run(options)
    failed = False
    try:
        if on_open is not None:
            on_open(run.folder)
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
    except BaseException:
        failed = True
        raise
    finally:
        run.finish(failed=failed)


@stage_factory
def log_tensorboard(
    log_dir: str | os.PathLike[str] | None = None,
    *,
    writer: Any = None,
    keys: Sequence[str] | None = None,
    every: int = 1,
    hparams: Mapping[str, Any] | None = None,
    all_hparams: bool = False,
    per_member: bool = False,
) -> Stage:
    """Pass events through unchanged while writing their metrics to TensorBoard.

    Each event's numeric scalars (Python numbers, 0-d tensors, NumPy scalars; not ``step``,
    not bools or timings such as ``train_time_sec`` unless named in ``keys``) are written at
    the event's ``step`` (its position in the stream when it has none), so the x-axis counts
    epochs. The layout is Keras's: a metric's split is a run (a sub-folder) and the rest of
    its name the tag, prefixed by the x-axis:

    ============================  =========================================
    event key                     run (folder) and tag
    ============================  =========================================
    ``train_loss``                ``<log_dir>/train``, ``epoch/loss``
    ``val_loss``                  ``<log_dir>/validation``, ``epoch/loss``
    ``test_acc``                  ``<log_dir>/test``, ``epoch/acc``
    ``lr`` (no split)             ``<log_dir>/train``, ``epoch/lr``
    ============================  =========================================

    So TensorBoard's first tab shows one chart per metric with training and validation
    overlaid; the Custom Scalars tab holds the same charts. The tags cannot collide with what
    a Lightning ``TensorBoardLogger`` writes at the global step when ``writer`` is its
    ``.experiment``: they start with ``epoch/`` and live in their own sub-runs. Scalars are
    flushed after each logged event so TensorBoard shows the run live.

    Each run is a session of TensorBoard's HParams tab, which compares the runs under one
    ``--logdir``: its hyperparameters are written when the first event is logged, and its
    status (success, or failure if the stream raised) when it ends. The table shows what
    tells runs apart, not every setting: the ``hparams`` given, and the optimizer's name and
    ``lr`` (from ``event["optimizer"]`` or a Lightning Trainer's one optimizer);
    ``all_hparams=True`` adds the optimizer's other settings (``weight_decay``, ``beta1``,
    ``eps``...). A run with none of these is no session. The table's metrics are the last
    points of the curves; for them to include the best value so far, each validation metric
    of a session also gets its running best as a curve, ``hparams/loss_best`` (best by the
    :ref:`direction rule <direction-rule>`), in a group after ``epoch`` so the first screen
    shows the curves themselves. Runs with different hyperparameter names each show theirs
    (a run lacking a name has an empty cell) as long as nothing in the folder wrote an
    experiment summary (``SummaryWriter.add_hparams`` and Lightning's loggers do).

    An ensemble's events (``model`` is an ensemble, see :func:`fitstream.ensemble_stream`;
    per-member values are lists of K numbers) are written one run per member, in folders
    named by what tells the members apart (``lr=0.01/train``, else ``member_03/train``), each
    member a session with ``member``, ``hparams`` (shared by all members) and the members'
    settings that differ between them, so the table compares the sweep without columns
    nobody varied (all of them with ``all_hparams=True``). A value that is the same for every
    member is written to each; a frozen member's curves end where it stopped training. Whole
    numbers (``member``, ``fold``, a width) show as whole numbers in the table.

    A grid judged by cross-validation (every member carries a ``fold``, as
    ``ensemble_stream(hparams=[{"fold": f, ...}])`` or :func:`fitstream.search` with
    ``folds=`` give) is written one run per *setting* instead, the members that differ only
    in their fold: ``lr=0.01/train``, ``lr=0.01/validation``. Each metric's tag holds the mean
    over the setting's folds, and ``folds/<metric>_low`` and ``folds/<metric>_high`` the mean
    minus and plus one standard deviation, which the Custom Scalars tab draws as a band
    around the mean; each setting is an HParams session with what differs between settings
    and its number of ``folds``. 20 members make 4 settings: 8 curves on a chart, not 40.
    ``per_member=True`` writes one run per member as for other ensembles. Nothing is written
    into the log folder itself for an ensemble, so TensorBoard lists no empty run ``.``.

    A stream that continues a run (its first step is ``s > 1``, as
    :func:`fitstream.resumable` numbers it after a restart) makes TensorBoard hide, in each
    of its run folders, what was written there from step ``s`` on before (the epochs the
    killed run trained after its last checkpoint), as ``SummaryWriter(purge_step=s)`` does:
    one curve per tag, every step once.

    The writer opens when the first event is requested. Writers opened here are flushed and
    closed however the stream ends (exhausted, closed early by ``take``/``early_stop``/
    ``break``, an exception, Ctrl-C); a writer passed in is flushed and left open (or closed
    again, if its owner closed it before the stream ended, as Lightning does at the end of fit)
    and its folder holds the sub-runs.

    Args:
        log_dir: The run's folder; ``None`` (with no ``writer``) uses SummaryWriter's default,
            ``runs/<date>_<host>``.
        writer: An open ``SummaryWriter`` to write into instead, e.g. the ``.experiment`` of a
            Lightning ``TensorBoardLogger`` so the values land in Lightning's own run.
        keys: Log only these keys. An event may lack some of them (Lightning leaves
            ``val_loss`` out of epochs without validation); a key that no event of the whole
            stream had is a KeyError listing the keys the events had, raised when the stream
            ends (a UserWarning if the consumer stopped it early). Their values must be
            numbers (for an ensemble, numbers or lists of K) (TypeError).
        every: Log every ``every``-th event (the 1st, ``every+1``-th, ...); the last event is
            always logged when the stream ends so the curves reach the final epoch. Running
            bests count every event.
        hparams: Hyperparameters of the run (numbers, strings, bools; ``None`` values left
            out) for the HParams tab, which compares the runs under one ``--logdir``.
        all_hparams: Whether the HParams table also shows the optimizer settings that do
            not tell runs apart.
        per_member: For a grid (members with a ``fold``): one run per member instead of one
            per setting.

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
        >>> events = [{"step": s, "train_loss": 1 / s} for s in (1, 2, 3)]
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     stage = log_tensorboard(run_dir, hparams={"lr": 0.1})
        ...     history = collect(pipe(events, stage))
        >>> [ev["step"] for ev in history]
        [1, 2, 3]
    """
    options = check_options(
        "log_tensorboard",
        log_dir=log_dir,
        writer=writer,
        keys=keys,
        every=every,
        hparams=hparams,
        all_hparams=all_hparams,
        per_member=per_member,
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
    all_hparams: bool = False,
    per_member: bool = False,
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
    options = check_options(
        "collect_tensorboard",
        log_dir=log_dir,
        writer=writer,
        keys=keys,
        every=every,
        hparams=hparams,
        all_hparams=all_hparams,
        per_member=per_member,
    )
    opened: list[str] = []
    for _ in _logged(events, options, opened.append):
        pass
    return opened[0]
