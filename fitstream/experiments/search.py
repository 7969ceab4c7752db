"""``search``: an Optuna study's trials trained K at a time, as the members of one ensemble.

Optuna asks, FitStream trains. :func:`search_events` asks the study for trials, builds each
trial's model and optimizer with the user's ``build(trial)``, and trains the trials that share
an architecture as the slots of one :func:`~fitstream.ensemble_stream`. Every epoch each slot's
value of ``key`` is reported to its trial; a trial its pruner prunes, or that reaches
``epochs``, leaves its slot, which takes the next trial at once (``Ensemble.replace``), so the
K slots stay busy. Several processes or machines running the same search against one Optuna
storage share the study: Optuna is the distributed engine, FitStream fills each worker.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._internal.checks import check_bool, check_name, check_positive_int, describe
from .._internal.optional import require
from .._internal.train_checks import check_optimizer_for
from ..events import Stage
from ..pipeline import pipe, upstream
from ..sources import ensemble_stream

__all__ = ["search", "search_events"]

_FUNC = "search"
_LOG = logging.getLogger("fitstream.search")
_PLAIN = (str, int, float, bool)


@dataclass
class _Trial:
    """An asked trial with what ``build`` made of it, and its values so far."""

    trial: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    values: list[float] = field(default_factory=list)

    def hparams(self) -> dict[str, Any]:
        """The slot's hyperparameters: the trial's number and its parameters (``params_x``)."""
        own = {f"params_{k}": v for k, v in self.trial.params.items() if isinstance(v, _PLAIN)}
        return {"trial": self.trial.number, **own}


def _architecture(model: nn.Module, optimizer: torch.optim.Optimizer) -> Hashable:
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


class _Search:
    """The state of one worker's search: its queues of built trials and its counts."""

    def __init__(
        self, study: Any, build: Callable[[Any], Any], device: torch.device, n_trials: int
    ) -> None:
        self.optuna = require("optuna", "optuna", feature=_FUNC)
        self.study, self.build, self.device, self.n_trials = study, build, device, n_trials
        self.waiting: dict[Hashable, deque[_Trial]] = {}
        self.running: dict[int, _Trial] = {}  # every trial this worker holds, by number
        self.exhausted = False
        self.minimize = study.direction == self.optuna.study.StudyDirection.MINIMIZE

    # -- asking ------------------------------------------------------------------------------

    def ask(self) -> tuple[Hashable, _Trial] | None:
        """Ask one more trial and build it; ``None`` once the study holds ``n_trials``."""
        while not self.exhausted:
            if len(self.study.get_trials(deepcopy=False)) >= self.n_trials:
                self.exhausted = True
                break
            trial = self.study.ask()
            if trial.number >= self.n_trials:  # other workers asked the last ones first
                trial.set_user_attr("fitstream", "asked past n_trials; not trained")
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                self.exhausted = True
                break
            built = self._built(trial)
            if built is not None:
                return built
        return None

    def _built(self, trial: Any) -> tuple[Hashable, _Trial] | None:
        fail = self.optuna.trial.TrialState.FAIL
        try:
            made = self.build(trial)
        except Exception as exc:  # only this trial fails; the search goes on
            trial.set_user_attr("fail_reason", f"build raised {type(exc).__name__}: {exc}")
            self.study.tell(trial, state=fail)
            _LOG.warning("search: trial %d failed in build: %r", trial.number, exc)
            return None
        try:
            model, optimizer = self._check(made, trial.number)
        except (TypeError, ValueError) as exc:
            trial.set_user_attr("fail_reason", str(exc))
            self.study.tell(trial, state=fail)
            raise
        entry = _Trial(trial, model, optimizer)
        self.running[trial.number] = entry
        return _architecture(model, optimizer), entry

    def _check(self, made: object, number: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        where = f"{_FUNC}: build(trial) for trial {number}"
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
            if tensor.device != self.device:
                raise ValueError(
                    f"{where} returned a model with {name!r} on {tensor.device}, but the data "
                    f"is on {self.device}; build it there"
                )
        check_optimizer_for(optimizer, model, func=where)
        return model, optimizer

    def next_of(self, architecture: Hashable) -> _Trial | None:
        """A trial of ``architecture``: a waiting one, else newly asked ones (others wait)."""
        queue = self.waiting.get(architecture)
        if queue:
            return queue.popleft()
        while (asked := self.ask()) is not None:
            kind, entry = asked
            if kind == architecture:
                return entry
            self.waiting.setdefault(kind, deque()).append(entry)
        return None

    def first_group(self, slots: int) -> tuple[Hashable, list[_Trial]] | None:
        """The next ensemble: the most numerous waiting architecture, filled up to ``slots``."""
        if not any(self.waiting.values()):
            asked = self.ask()
            if asked is None:
                return None
            self.waiting.setdefault(asked[0], deque()).append(asked[1])
        architecture = max(self.waiting, key=lambda a: len(self.waiting[a]))
        group: list[_Trial] = []
        while len(group) < slots:
            entry = self.next_of(architecture)
            if entry is None:
                break
            group.append(entry)
        return architecture, group

    # -- telling -----------------------------------------------------------------------------

    def best(self, values: Sequence[float]) -> float | None:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return None
        return min(finite) if self.minimize else max(finite)

    def finish(self, entry: _Trial, *, pruned: bool) -> None:
        """Tell the study how a trial ended: pruned, or its best value (FAIL if all NaN)."""
        states = self.optuna.trial.TrialState
        self.running.pop(entry.trial.number, None)
        if pruned:
            self.study.tell(entry.trial, state=states.PRUNED)
            return
        best = self.best(entry.values)
        if best is None:
            entry.trial.set_user_attr("fail_reason", "every value of the key was NaN")
            self.study.tell(entry.trial, state=states.FAIL)
        else:
            self.study.tell(entry.trial, best)

    def fail_all(self, reason: str) -> None:
        """Tell every trial this worker holds FAIL (the search was interrupted)."""
        fail = self.optuna.trial.TrialState.FAIL
        for entry in list(self.running.values()):
            entry.trial.set_user_attr("fail_reason", reason)
            self.study.tell(entry.trial, state=fail)
        self.running.clear()
        self.waiting.clear()

    def counts(self) -> dict[str, int]:
        """The study's trials by state, of every worker."""
        states = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        return {
            "trials_done": sum(t.state == states.COMPLETE for t in trials),
            "trials_pruned": sum(t.state == states.PRUNED for t in trials),
            "trials_running": sum(t.state == states.RUNNING for t in trials),
        }


def _keeper(
    search: _Search, slots: list[_Trial | None], architecture: Hashable, *, key: str,
    epochs: int, every: int, pruning: bool,
) -> Stage:  # fmt: skip
    """The stage that reports each slot's value, ends its trial, and refills its slot."""
    steps = [0] * len(slots)

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for event in it:
                ensemble = event["model"]
                values = event.get(key)
                if not isinstance(values, list) or len(values) != len(slots):
                    keys = ", ".join(repr(k) for k in event)
                    raise KeyError(
                        f"{_FUNC}: the events must hold {key!r}, one value per slot (add it with "
                        f"stages=[augment(validation_loss(...))]); they have {keys}"
                    )
                ended: list[int] = []
                for k, entry in enumerate(slots):
                    if entry is None or not ensemble.active[k]:
                        continue
                    steps[k] += 1
                    value = float(values[k])
                    entry.values.append(value)
                    if pruning and steps[k] % every == 0:
                        entry.trial.report(value, steps[k])
                        if entry.trial.should_prune():
                            search.finish(entry, pruned=True)
                            ended.append(k)
                            continue
                    if steps[k] >= epochs:
                        search.finish(entry, pruned=False)
                        ended.append(k)
                event["trial"] = [math.nan if e is None else e.trial.number for e in slots]
                event["trial_step"] = list(steps)
                event.update(search.counts())
                for k in ended:
                    ensemble.freeze(k)
                    slots[k], steps[k] = None, 0
                yield event
                for k in ended:
                    entry = search.next_of(architecture)
                    if entry is not None:
                        ensemble.replace(k, entry.model, entry.optimizer, hparams=entry.hparams())
                        slots[k], steps[k] = entry, 0
                if all(e is None for e in slots):
                    return

    return stage


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
    generator: torch.Generator | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of :func:`search`, one per epoch of each ensemble it trains (lazy).

    Each event is an ensemble's event after ``stages``, with ``trial`` (each slot's trial
    number, NaN for an empty slot), ``trial_step`` (each slot's epochs with its trial,
    from 1), and the study's ``trials_done``, ``trials_pruned`` and ``trials_running`` (of every
    worker). The members' ``hparams`` hold ``trial`` and the trial's parameters as
    ``params_<name>``, so ``collect_pd(search_events(...))`` has one row per slot and epoch,
    with the trial and its parameters. Arguments as for :func:`search`, which consumes this.
    """
    optuna = require("optuna", "optuna", feature=_FUNC)
    if not isinstance(study, optuna.study.Study):
        raise TypeError(f"{_FUNC}: 'study' must be an optuna Study, got {describe(study)}")
    if len(study.directions) != 1:
        raise ValueError(
            f"{_FUNC}: the study must have one objective, it has {len(study.directions)}"
        )
    if not callable(build):
        raise TypeError(f"{_FUNC}: 'build' must be a function of a trial, got {describe(build)}")
    check_name(key, func=_FUNC, what="'key'")
    for name, value in (("epochs", epochs), ("n_trials", n_trials), ("slots", slots),
                        ("every", every), ("batch_size", batch_size)):  # fmt: skip
        check_positive_int(value, func=_FUNC, arg=name)
    check_bool(prune, func=_FUNC, arg="prune")
    check_bool(shuffle, func=_FUNC, arg="shuffle")
    if not isinstance(train_data, list | tuple) or not train_data:
        raise TypeError(
            f"{_FUNC}: 'train_data' must be a tuple of tensors such as (X, y), got "
            f"{describe(train_data)}"
        )
    if isinstance(stages, str) or not isinstance(stages, list | tuple):
        raise TypeError(f"{_FUNC}: 'stages' must be a list of stages, got {describe(stages)}")
    for i, stage in enumerate(stages):
        if not callable(stage):
            raise TypeError(f"{_FUNC}: 'stages[{i}]' must be a stage, got {describe(stage)}")
    device = (
        train_data[0].device if isinstance(train_data[0], torch.Tensor) else torch.device("cpu")
    )
    search = _Search(study, build, device, n_trials)
    return _events(search, train_data, loss_fn, key=key, epochs=epochs, slots=slots,
                   batch_size=batch_size, stages=list(stages), prune=prune, every=every,
                   shuffle=shuffle, generator=generator)  # fmt: skip


def _events(
    search: _Search, train_data: Sequence[torch.Tensor], loss_fn: Callable[..., torch.Tensor],
    *, key: str, epochs: int, slots: int, batch_size: int, stages: list[Stage], prune: bool,
    every: int, shuffle: bool, generator: torch.Generator | None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    try:
        while (group := search.first_group(slots)) is not None:
            architecture, entries = group
            if not entries:
                continue
            members: list[_Trial | None] = list(entries)
            stream = ensemble_stream(
                train_data, [e.model for e in entries], [e.optimizer for e in entries], loss_fn,
                batch_size=batch_size, shuffle=shuffle, generator=generator,
                hparams=[e.hparams() for e in entries],
            )  # fmt: skip
            keeper = _keeper(search, members, architecture, key=key, epochs=epochs,
                             every=every, pruning=prune)  # fmt: skip
            yield from pipe(stream, *stages, keeper)
    except BaseException as exc:  # Ctrl-C, or an error in training: no trial left RUNNING
        search.fail_all(f"the search ended: {type(exc).__name__}: {exc}")
        raise


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
    generator: torch.Generator | None = None,
) -> Any:
    """Run an Optuna study's trials K at a time, as the members of one ensemble; return the study.

    ``search`` asks ``study`` for trials and calls ``build(trial)`` for each, which suggests
    the trial's parameters and returns ``(model, optimizer)`` on the data's device. Trials whose
    models share an architecture (modules, parameter shapes and dtypes) and optimizer family
    (SGD; Adam or AdamW) train together as the ``slots`` members of one
    :func:`~fitstream.ensemble_stream`, with ``stages`` applied to its events (such as
    ``augment(validation_loss(val, loss_fn))`` to compute ``key``).

    Every epoch, each member's ``key`` is reported to its trial at the trial's own step
    (1, 2, ...). With ``prune``, a trial the study's pruner prunes is told ``PRUNED`` and
    leaves its slot; a trial that reaches ``epochs`` is told its value: **the best ``key`` over
    its epochs**, the smallest for a study that minimizes, the largest for one that maximizes
    (NaN values left out; a trial whose values are all NaN is told ``FAIL``). Its slot takes the
    next trial at once, with fresh weights from ``build``, fresh optimizer state and its own
    step count from 1 (``Ensemble.replace``): the K slots stay busy, as in continuous batching.

    Architectures: the first ensemble is of the architecture the first trials have; trials of
    other architectures that the study suggests meanwhile wait (they are ``RUNNING`` in the
    study), and train in an ensemble of their own once the current one has no trial left. So
    an architecture with few trials trains in a smaller ensemble, one trial alone if it must;
    the work is never lost, only later.

    ``n_trials`` counts the trials in the **study**, of every worker and every state (finished,
    pruned, failed, running), so N processes or machines running the same ``search`` against
    one storage (Optuna's ``JournalStorage`` with a ``JournalFileBackend`` on one host, an RDB
    URL such as PostgreSQL's across machines) stop together once the study holds
    ``n_trials``. A trial a worker asks past that count (two workers asking at once) is told
    ``FAIL`` with the user attribute ``fitstream`` saying so, and is not trained. A worker
    killed outright leaves its trials ``RUNNING``; Optuna's heartbeat (an RDB storage's
    ``heartbeat_interval`` and ``failed_trial_callback=RetryFailedTrialCallback()``) marks
    them failed and retries them.

    A ``build`` that raises fails only that trial (``FAIL``, the reason in the user attribute
    ``fail_reason``) and the search goes on; one that returns the wrong things is an error
    naming the trial. An error in training, or Ctrl-C, tells every trial this worker holds
    ``FAIL`` and is raised, leaving the storage consistent.

    Args:
        study: An ``optuna.Study`` with one objective.
        build: ``build(trial) -> (model, optimizer)``: suggests the parameters, builds them.
        train_data: Tensors sharing their first dimension, e.g. ``(X, y)``, on one device.
        loss_fn: As for :func:`~fitstream.ensemble_stream`.
        key: The metric reported and optimised, such as ``"val_loss"``.
        epochs: Epochs per trial (fewer if pruned).
        n_trials: Trials in the study, of all workers, at which the search stops.
        slots: Members per ensemble, K.
        batch_size: Rows per mini-batch.
        stages: Stages applied to each ensemble's events before the trials are told.
        prune: Whether to report to the pruner and prune (``False``: every trial runs
            ``epochs``).
        every: Report every ``every``-th epoch of a trial.
        shuffle: Whether to shuffle the rows each epoch (one order shared by the slots).
        generator: Random source for the shuffle.

    Returns:
        The study, for ``study.best_trial`` and ``study.trials_dataframe()``.

    Raises:
        ImportError: Optuna is not installed (``pip install 'fitstream[optuna]'``).
        TypeError: An argument of the wrong type, or ``build`` returning something else
            than ``(model, optimizer)`` (the trial is named, and told FAIL).
        ValueError: A bad count, a multi-objective study, a model built on another device or
            an optimizer not over its model (the trial is named, and told FAIL).

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
        >>> study = search(study, build, (X, y), nn.MSELoss(), key="val_loss", epochs=5,
        ...                n_trials=6, slots=4, batch_size=16,
        ...                stages=[augment(validation_loss((X, y), nn.MSELoss()))])
        >>> len(study.trials), {t.state.name for t in study.trials}
        (6, {'COMPLETE'})
    """
    events = search_events(
        study, build, train_data, loss_fn, key=key, epochs=epochs, n_trials=n_trials,
        slots=slots, batch_size=batch_size, stages=stages, prune=prune, every=every,
        shuffle=shuffle, generator=generator,
    )  # fmt: skip
    for _ in events:
        pass
    return study
