"""``search`` and ``search_events``: the public calls and their arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..._internal.optional import require
from ...events import Stage
from .book import Book
from .checks import (
    check_direction,
    check_folds,
    check_objectives,
    check_options,
    check_stages,
    check_storage,
    check_study,
    check_train_data,
)
from .driver import Plan, Worker
from .heartbeat import choose_heartbeat
from .progress import SearchBar
from .result import SearchResult

__all__ = ["SearchResult", "search", "search_events"]

_FUNC = "search"


def _start(
    study: Any, build: Callable[[Any], Any], train_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor], options: dict[str, Any],
) -> tuple[Worker, Iterator[dict[str, Any]]]:  # fmt: skip
    optuna = require("optuna", "optuna", feature=_FUNC)
    check_study(study, optuna, func=_FUNC)
    check_storage(study, func=_FUNC)  # before anything reads the study from it
    check_objectives(study, func=_FUNC)
    if not callable(build):
        raise TypeError(f"{_FUNC}: 'build' must be a function of a trial, got {build!r}")
    o = options
    save_dir = check_options(
        key=o["key"], epochs=o["epochs"], n_trials=o["n_trials"], slots=o["slots"],
        every=o["every"], batch_size=o["batch_size"], startup=o["startup"], seed=o["seed"],
        prune=o["prune"], shuffle=o["shuffle"], progress=o["progress"], pad=o["pad"],
        save_dir=o["save_dir"], func=_FUNC,
    )  # fmt: skip
    check_direction(study, o["key"], o["mode"], optuna, func=_FUNC)
    device = check_train_data(train_data, func=_FUNC)
    stages = check_stages(o["stages"], func=_FUNC)
    folds = check_folds(o["folds"], train_data, o["slots"], func=_FUNC)
    heartbeat = choose_heartbeat(
        study, optuna, interval=o["heartbeat_interval"], grace=o["grace_period"],
        callback=o["stale_trial_callback"], func=_FUNC,
    )  # fmt: skip
    plan = Plan(
        build=build, train_data=train_data, loss_fn=loss_fn, device=device, key=o["key"],
        epochs=o["epochs"], slots=o["slots"], batch_size=o["batch_size"], stages=stages,
        prune=o["prune"], every=o["every"], shuffle=o["shuffle"], seed=o["seed"], folds=folds,
        save_dir=save_dir, pad=o["pad"], func=_FUNC,
    )  # fmt: skip
    book = Book(study, optuna, n_trials=o["n_trials"], slots=o["slots"] // plan.per_trial,
                startup=o["startup"], pruning=o["prune"], heartbeat=heartbeat)  # fmt: skip
    study.set_user_attr("fitstream", {"key": o["key"], "epochs": o["epochs"],
                                      "folds": plan.per_trial if folds else 0})  # fmt: skip
    worker = Worker(plan, book, heartbeat, SearchBar(o["n_trials"]) if o["progress"] else None)
    return worker, _run(worker)


def _run(worker: Worker) -> Iterator[dict[str, Any]]:
    """The worker's events; on any way out, its held trials are told and its threads stopped."""
    with worker.interrupts:
        try:
            yield from worker.events()
        except BaseException as exc:  # Ctrl-C, an error in training, the consumer closing
            worker.interrupts.reached()
            interrupted = not isinstance(exc, Exception)
            worker.book.fail_held(f"the search ended: {type(exc).__name__}: {exc}",
                                  retry=interrupted)  # fmt: skip
            raise
        finally:
            worker.close()


def search_events(
    study: Any,
    build: Callable[[Any], tuple[nn.Module, torch.optim.Optimizer]],
    train_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    *,
    key: str,
    epochs: int,
    n_trials: int,
    slots: int = 16,
    batch_size: int = 1,
    stages: Sequence[Stage] = (),
    prune: bool = True,
    every: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    folds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    mode: str | None = None,
    startup: int | None = None,
    progress: bool = False,
    save_dir: Any = None,
    pad: bool = True,
    heartbeat_interval: float | None = None,
    grace_period: float | None = None,
    stale_trial_callback: Callable[[Any, Any], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of :func:`search`, one per epoch of each ensemble it trains (lazy).

    Each event is an ensemble's event after ``stages``, with ``trial`` (each member's trial
    number, NaN for an empty slot), ``trial_step`` (each member's epochs with its trial, from
    1), and the study's ``trials_done``, ``trials_pruned``, ``trials_running`` and
    ``trials_failed`` (of every worker). The members' ``hparams`` hold ``trial``, the trial's
    parameters as ``params_<name>`` and, with ``folds``, the member's ``fold``, so
    ``collect_pd(search_events(...))`` has one row per member and epoch, and
    :func:`~fitstream.summarize` of the collected events gives one row per setting.
    Arguments as for :func:`search`, which consumes this; every argument is checked at the
    call. Closing the stream early tells the trials it holds ``FAIL`` and hands them to the
    retry callback, as Ctrl-C does.
    """
    options = {k: v for k, v in locals().items() if k not in ("study", "build", "train_data",
                                                                "loss_fn")}  # fmt: skip
    _, events = _start(study, build, train_data, loss_fn, options)
    return events


def search(
    study: Any,
    build: Callable[[Any], tuple[nn.Module, torch.optim.Optimizer]],
    train_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    *,
    key: str,
    epochs: int,
    n_trials: int,
    slots: int = 16,
    batch_size: int = 1,
    stages: Sequence[Stage] = (),
    prune: bool = True,
    every: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    folds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    mode: str | None = None,
    startup: int | None = None,
    progress: bool = False,
    save_dir: Any = None,
    pad: bool = True,
    heartbeat_interval: float | None = None,
    grace_period: float | None = None,
    stale_trial_callback: Callable[[Any, Any], None] | None = None,
) -> SearchResult:
    """Run an Optuna study's trials many at a time, as the members of ensembles.

    ``search`` asks ``study`` for trials and calls ``build(trial)`` for each, which suggests the
    trial's parameters and returns ``(model, optimizer)`` on the data's device. Trials whose
    models share an architecture (modules, parameter shapes and dtypes) and optimizer family
    (SGD; Adam or AdamW) train together as the members of one
    :func:`~fitstream.ensemble_stream`, with ``stages`` applied to its events (such as
    ``augment(validation_loss(val, loss_fn))`` to compute ``key``).

    **Values and pruning.** Every epoch, each trial's value of ``key`` is reported to it at the
    trial's own step (1, 2, ...); with ``prune``, a trial its pruner prunes is told ``PRUNED``
    and leaves its slot. A trial that trains all ``epochs`` is told ``COMPLETE`` with its best
    value (the smallest for a study that minimizes; NaN left out; ``FAIL`` if all are NaN),
    never pruned at its last epoch. Its user attributes keep ``best_step`` (the epoch of that
    value) and ``epochs_trained``.

    **Folds.** With ``folds=kfold(...)`` (or ``bootstrap(...)``), one trial is one setting
    trained on every fold: ``build`` is called once per fold, and member ``f`` trains on
    ``folds[f]``'s train rows. Score each member on its own held-out rows with
    ``evaluate(..., folds=folds)`` or ``validation_loss(..., folds=folds)`` in ``stages``. The
    trial's value each epoch is the mean over its folds, which the pruner sees; its final value
    is that mean at the epoch where the mean is best (the rule of :func:`~fitstream.summarize`),
    and its user attributes keep the folds' values there (``fold_values``). A grid is a study
    whose sampler enumerates it (``optuna.samplers.GridSampler``): ``summarize(study)`` then
    gives its table.

    **Slots.** ``slots`` bounds the members of all the worker's ensembles (a trial takes one
    member per fold). A trial is asked only when a slot is free to train it, so none waits
    ``RUNNING`` without training, and the sampler suggests it knowing every result so far. A
    trial of another architecture trains at once in an ensemble of its own, stepped in turn with
    the others; after each round, ensembles with empty slots are rebuilt and those of one
    architecture merged, each trial continuing exactly. The search starts with a *first wave*
    of ``startup`` trials, by default the study's pruner's start-up (the ``COMPLETE`` trials it
    needs before it prunes: ``MedianPruner``'s ``n_startup_trials``, 1 for
    ``SuccessiveHalvingPruner``/``HyperbandPruner``'s "auto" resource, 0 for others or without
    ``prune``), and opens the other slots once these have completed, so that every later trial
    can be pruned. Each member shuffles its rows with its own
    generator, ``torch.Generator().manual_seed(seed + n * F + f)`` for trial ``n`` and fold
    ``f`` of F (F = 1, f = 0 without folds; a retried trial uses its original's ``n``), so a trial
    trains the same in any slot, ensemble or worker, as its lone
    :func:`~fitstream.epoch_stream` with that generator.

    **MLPs of several widths, one ensemble.** With ``pad``, a trial whose model is an MLP (an
    ``nn.Sequential`` of ``nn.Linear`` and activations that map 0 to 0: ReLU, GELU, SiLU, Tanh,
    ...) trained by SGD, Adam or AdamW trains padded with zero units to the widest hidden
    widths of its kind seen so far, so trials that differ only in widths stack into one
    ensemble. The zero units compute nothing, get zero gradients and stay zero: the trial trains
    as alone, to float32 rounding (about 1e-7 relative), and its own model gets its trained
    weights (``best_model``, ``save_dir``). A model the padding would make more than 8 times
    larger trains as it is.

    **Many workers.** ``n_trials`` counts the study's trials, of every worker, asked ones too,
    except a failed trial that was enqueued again (its retry counts) and a trial asked past
    ``n_trials`` by two workers at once (told ``FAIL``, user attribute ``fitstream``). So N
    processes or machines running the same search on one storage (a journal file on one host,
    PostgreSQL across hosts) stop together at ``n_trials``.

    **Faults.** The worker keeps a heartbeat for every trial it holds: a stamp in the trial's
    system attributes every ``heartbeat_interval`` seconds (default 60; none for a study in
    memory), written with the trial itself when it is asked, and Optuna's own too where the
    storage keeps one (``RDBStorage(heartbeat_interval=...)``). At the start, then once per
    interval, and while it waits for other workers' trials at the end, it fails the trials whose
    heartbeat is older than ``grace_period`` (default twice the interval) and hands each to
    ``stale_trial_callback`` (default Optuna's
    ``RetryHeartbeatStaleTrialCallback(max_retry=3)``), which enqueues it again: the workers
    that are alive train it. Ctrl-C, or closing :func:`search_events` early, tells every held
    trial ``FAIL`` and hands it to the same callback (the interrupt is held back for the
    duration of one storage write, then raised); an error in training tells them ``FAIL`` and is
    raised. A ``build`` that raises fails only its trial (``fail_reason``); one that returns the
    wrong things is an error naming the trial. A storage write that finds the database locked is
    retried.

    **What you see, and what you get.** ``progress=True`` shows one bar over ``n_trials``, with
    the trials done, pruned and running and the best value so far (with folds, ± its standard
    error). Each finished trial logs one ``INFO`` line on the ``fitstream.search`` logger. The
    result holds the best model this worker trained, at its best epoch; with ``save_dir``,
    every completed trial's best-epoch state is saved there (``trial-<n>.pt``, its path in the
    user attribute ``state_path``), and :func:`~fitstream.load_best` loads the study's best in
    any process.

    Args:
        study: An ``optuna.Study`` with one objective.
        build: ``build(trial) -> (model, optimizer)``: suggests the parameters, builds them.
        train_data: Tensors sharing their first dimension, e.g. ``(X, y)``, on one device.
        loss_fn: As for :func:`~fitstream.ensemble_stream`.
        key: The metric reported and optimised, such as ``"val_loss"``.
        epochs: Epochs per trial (fewer if pruned).
        n_trials: Trials in the study, of all workers, at which the search stops.
        slots: Members trained at once, over all the worker's ensembles.
        batch_size: Rows per mini-batch.
        stages: Stages applied to each ensemble's events before the trials are told.
        prune: Whether to report to the pruner and prune (``False``: every trial runs
            ``epochs``).
        every: Report every ``every``-th epoch of a trial.
        shuffle: Whether each member shuffles its rows every epoch.
        seed: The seed the members' shuffle generators are derived from (see Slots).
        folds: ``(train_rows, held_out_rows)`` per fold, from :func:`~fitstream.kfold` or
            :func:`~fitstream.bootstrap`: each trial trains one member per fold.
        mode: ``"min"`` or ``"max"``: say which way ``key`` improves when it contradicts the
            name's (``val_loss`` is a loss); ``None``: the study's direction must agree with the
            key's name where the name tells.
        startup: Trials in the first wave (see Slots); ``None``: the study's start-up rule.
        progress: Show a bar over the trials (the extra ``fitstream[progress]``).
        save_dir: A folder where each completed trial's best-epoch state is saved.
        pad: Train MLPs that differ only in hidden widths in one ensemble (see above).
        heartbeat_interval: Seconds between heartbeats (see Faults).
        grace_period: Seconds without a heartbeat after which a trial is failed as stale.
        stale_trial_callback: ``callback(study, frozen_trial)`` for each trial failed as stale
            or interrupted.

    Returns:
        A :class:`SearchResult`: ``.study``, ``.best_model`` (this worker's), ``.best_trial``.

    Raises:
        ImportError: Optuna (or tqdm for ``progress``) is not installed.
        TypeError: An argument of the wrong type, or ``build`` returning something else
            than ``(model, optimizer)`` (the trial is named, and told ``FAIL``).
        ValueError: A bad count, a multi-objective study, a study whose direction contradicts
            ``key``'s, ``slots`` below the folds' count, bad ``folds``, a model built on another
            device or an optimizer not over its model (the trial is named, and told ``FAIL``),
            heartbeat settings given to a storage that keeps Optuna's own.
        PermissionError, IsADirectoryError: The study's storage file (a journal file, an SQLite
            database) or ``save_dir`` cannot be written; the path is named.

    Example:
        >>> import optuna
        >>> from torch import nn
        >>> from fitstream import augment, validation_loss
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> X = torch.randn(64, 3)
        >>> y = X @ torch.tensor([[1.0], [-1.0], [0.5]])
        >>> def build(trial):
        ...     model = nn.Linear(3, 1)
        ...     lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        ...     return model, torch.optim.SGD(model.parameters(), lr=lr)
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> result = search(study, build, (X, y), nn.MSELoss(), key="val_loss", epochs=5,
        ...                 n_trials=6, slots=4, batch_size=16,
        ...                 stages=[augment(validation_loss((X, y), nn.MSELoss()))])
        >>> len(study.trials), {t.state.name for t in study.trials}
        (6, {'COMPLETE'})
        >>> attrs = study.best_trial.user_attrs
        >>> result.best_model_trial == study.best_trial.number, attrs["best_step"]
        (True, 5)
        >>> len(attrs["curves"][0]) == attrs["epochs_trained"] == 5  # each epoch's value
        True
    """
    options = {k: v for k, v in locals().items() if k not in ("study", "build", "train_data",
                                                                "loss_fn")}  # fmt: skip
    worker, events = _start(study, build, train_data, loss_fn, options)
    for _ in events:
        pass
    best = worker.best
    return SearchResult(
        study=study,
        best_model=None if best is None else best[2],
        best_model_trial=None if best is None else best[0],
    )
