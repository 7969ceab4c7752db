"""``prune``: report each epoch's metric to an Optuna trial, and stop the trials it prunes.

Optuna's pruners (median, successive halving, Hyperband...) decide from the values a trial
reports per step whether it is worth going on. :func:`prune` is that report as a stage: one
trial per model, or one per member of an ensemble. Optuna is the optional extra
``fitstream[optuna]``, imported when ``prune`` is called.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .._internal.checks import check_positive_int, describe
from .._internal.lookup import metric_values
from .._internal.members import ensemble_of
from .._internal.optional import require
from ..events import Stage
from ..pipeline import stage_factory, upstream

__all__ = ["prune"]

_FUNC = "prune"


def _rank() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` group, else ``(0, 1)``.

    Before the group exists (Lightning starts it when fit starts), the launcher's ``RANK``
    and ``WORLD_SIZE`` (set by torchrun) tell.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _shared(decision: bool, world: int) -> bool:
    """Rank 0's decision, on every rank (one broadcast; nothing when there is one process)."""
    if world == 1:
        return decision
    import torch.distributed as dist

    box: list[Any] = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _check_trial(trial: object, optuna: Any, *, arg: str, study: Any = None) -> None:
    """Refuse what cannot take reports: a FrozenTrial, a finished trial, another study's."""
    if isinstance(trial, optuna.trial.FrozenTrial):
        raise TypeError(
            f"{_FUNC}: {arg} is a FrozenTrial (trial {trial.number}), a record of a trial that "
            "takes no reports; pass the live trial (the objective's argument, or from "
            "study.ask())"
        )
    if not isinstance(trial, optuna.trial.BaseTrial):
        raise TypeError(
            f"{_FUNC}: {arg} must be an optuna Trial (the objective's argument, or from "
            f"study.ask()), got {describe(trial)}"
        )
    own = getattr(trial, "study", None)
    if own is None or not isinstance(trial, optuna.trial.Trial):
        return  # a FixedTrial: reports go nowhere, by Optuna's design
    state = own._storage.get_trial(trial._trial_id).state
    if state.is_finished():
        raise ValueError(
            f"{_FUNC}: {arg} (trial {trial.number}) is already {state.name}; a finished trial "
            "takes no more reports: ask the study for a new trial"
        )
    if study is not None and (
        own._study_id != study._study_id or own.study_name != study.study_name
    ):
        raise ValueError(
            f"{_FUNC}: {arg} (trial {trial.number}) belongs to the study {own.study_name!r}, "
            f"not to study={study.study_name!r}; its pruned members would be told PRUNED in the "
            "wrong study. Pass the study the trials were asked from"
        )


def _step_of(event: dict[str, Any], count: int) -> int:
    step = event.get("step", count)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(
            f"{_FUNC}: Optuna takes a step that is a non-negative int, but the event's 'step' is "
            f"{describe(step)}"
        )
    return step


@stage_factory
def prune(
    trial: Any,
    key: str,
    *,
    every: int = 1,
    study: Any = None,
) -> Stage:
    """Report ``key`` to an Optuna trial each epoch; end (or freeze) what its pruner prunes.

    Each event's ``key`` is reported with ``trial.report(value, step)`` at the event's
    ``step``, every ``every``-th event. When ``trial.should_prune()`` then says so, the stage
    raises :class:`optuna.TrialPruned` (Optuna's own convention: ``study.optimize`` records the
    trial as pruned) with a message naming the step and the value; the stream is closed as on
    any exception, so no further epoch is trained. A NaN is reported as it is: Optuna's
    percentile and median pruners prune a trial whose values are all NaN.

    On an ensemble's events, pass one trial per member, in member order, and the study:
    ``prune(trials, "val_loss", study=study)``. Member ``k``'s value goes to ``trials[k]``. A
    member its pruner prunes is frozen at that event (as :func:`~fitstream.early_stop` freezes
    one) and its trial is told ``PRUNED`` at once with ``study.tell``; members already frozen
    report nothing more. Once every member is pruned or stopped, the stream ends after that
    event, without another epoch. The trials of the members that finish are left to you
    (``study.tell(trial, value)``), as :func:`~fitstream.search` does.

    Under ``torch.distributed`` (Lightning DDP with ``fitstream_lightning.fit_stream``), run
    the same pipeline on every rank. Only rank 0 talks to the study: it reports and asks
    ``should_prune``, and its decision is broadcast, so every rank raises ``TrialPruned`` at
    the same epoch. As Optuna documents for DDP, the other ranks have no trial of their own:
    pass ``trial=None`` there (and share the trial's parameters from rank 0, for example with
    ``torch.distributed.broadcast_object_list``). The rank is read from the process group at
    each event, and before the group exists (Lightning starts it when fit starts) from the
    ``RANK`` that torchrun sets.

    Args:
        trial: An ``optuna.trial.Trial``; a list of one per member for an ensemble; ``None``
            on the non-zero ranks of a distributed run.
        key: The metric to report, such as ``"val_loss"``; the study's direction says which
            way it improves.
        every: Report (and ask the pruner) every ``every``-th event only.
        study: The ``optuna.Study`` of the trials; needed for an ensemble's list of trials.

    Returns:
        A stage for :func:`fitstream.pipe`; ``prune(events, trial, key)`` returns the stream.

    Raises:
        ImportError: Optuna is not installed (``pip install 'fitstream[optuna]'``).
        TypeError: ``trial`` is not a trial (or ``None`` outside a non-zero rank), a list
            holds something else, ``study`` is not a study, or ``every`` is not an int.
        ValueError: ``every`` is below 1, a list of trials is empty, repeats a trial or
            comes without ``study``. At an event: the list's length differs from the
            ensemble's member count, or one trial is given for an ensemble's per-member
            values. ``KeyError`` (at an event): the event has no ``key``; the keys it has are
            listed.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
        >>> trial = study.ask()
        >>> events = [{"step": s, "val_loss": v} for s, v in [(1, 0.8), (2, 0.9), (3, 1.5)]]
        >>> seen = []
        >>> try:
        ...     for event in prune(events, trial, "val_loss"):
        ...         seen.append(event["step"])
        ... except optuna.TrialPruned as pruned:
        ...     print(pruned)
        prune: trial 0 pruned at step 3, where val_loss=1.5
        >>> seen, trial.storage.get_trial(trial._trial_id).intermediate_values
        ([1, 2], {1: 0.8, 2: 0.9, 3: 1.5})
    """
    optuna = require("optuna", "optuna", feature=_FUNC)
    check_positive_int(every, func=_FUNC, arg="every")
    if not isinstance(key, str) or not key:
        raise TypeError(f"{_FUNC}: 'key' must be a non-empty str, got {describe(key)}")
    rank, _ = _rank()  # torchrun says, before the process group starts
    trials: list[Any] | None = None
    if isinstance(trial, list | tuple):
        if not trial:
            raise ValueError(f"{_FUNC}: 'trial' as a list must hold one trial per member, got none")
        if not isinstance(study, optuna.study.Study):
            raise ValueError(
                f"{_FUNC}: a list of trials (one per ensemble member) needs study=, the study "
                f"that tells a pruned member's trial PRUNED; got study={describe(study)}"
            )
        for k, each in enumerate(trial):
            _check_trial(each, optuna, arg=f"'trial[{k}]'", study=study)
        if len({id(t) for t in trial}) != len(trial):
            raise ValueError(f"{_FUNC}: 'trial' repeats a trial; give each member its own")
        trials = list(trial)
    elif trial is None:
        if rank == 0:
            raise TypeError(
                f"{_FUNC}: 'trial' is None, which only the non-zero ranks of a distributed run "
                "may pass (rank 0 reports for all); pass the objective's trial"
            )
    else:
        if study is not None and not isinstance(study, optuna.study.Study):
            raise TypeError(f"{_FUNC}: 'study' must be an optuna Study, got {describe(study)}")
        _check_trial(trial, optuna, arg="'trial'", study=study)

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        done: set[int] = set()
        count = 0
        with upstream(events) as it:
            for event in it:
                count += 1
                rank, world = _rank()  # the group exists once training has started
                if count % every:
                    yield event
                    continue
                value = metric_values(event, key, func=_FUNC)
                step = _step_of(event, count)
                if trials is None:
                    if isinstance(value, list):
                        raise ValueError(
                            f"{_FUNC}: {key!r} holds one value per member of an ensemble; "
                            "pass one trial per member (and study=)"
                        )
                    _prune_one(trial, value, step, key=key, optuna=optuna, rank=rank, world=world)
                    yield event
                    continue
                _prune_members(
                    event, trials, value, step=step, study=study, done=done, key=key, optuna=optuna
                )
                yield event
                ensemble = ensemble_of(event)
                if ensemble is not None and not any(ensemble.active):
                    return

    return stage


def _prune_one(
    trial: Any, value: float, step: int, *, key: str, optuna: Any, rank: int, world: int
) -> None:
    decision = False
    if rank == 0:
        trial.report(value, step)
        decision = bool(trial.should_prune())
    if _shared(decision, world):
        number = "" if trial is None else f" {trial.number}"
        raise optuna.TrialPruned(
            f"{_FUNC}: trial{number} pruned at step {step}, where {key}={_shown(value)}"
        )


def _shown(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)


def _prune_members(
    event: dict[str, Any],
    trials: Sequence[Any],
    values: float | list[float],
    *,
    step: int,
    study: Any,
    done: set[int],
    key: str,
    optuna: Any,
) -> None:
    ensemble = ensemble_of(event)
    if not isinstance(values, list) or ensemble is None:
        raise ValueError(
            f"{_FUNC}: a list of trials is for an ensemble's events, but {key!r} is "
            f"{describe(values)} and event['model'] is not an ensemble; pass one trial"
        )
    if len(trials) != len(ensemble):
        raise ValueError(
            f"{_FUNC}: 'trial' holds {len(trials)} trials for an ensemble of {len(ensemble)} "
            "members; give one trial per member, in member order"
        )
    active = ensemble.active
    for k, (each, value) in enumerate(zip(trials, values, strict=True)):
        if k in done or not active[k]:
            continue
        each.report(value, step)
        if each.should_prune():
            done.add(k)
            ensemble.freeze(k)
            study.tell(each, state=optuna.trial.TrialState.PRUNED)
