"""The search's two counting rules: which trials count against ``n_trials``, and when slots open.

**n_trials.** A trial counts once it is asked, whatever its state, with two exceptions: a
``FAIL`` trial that Optuna's retry callback enqueued again (the retry counts in its place), and
a trial a worker asked past ``n_trials`` and never trained. So a trial of a worker that died is
counted once, by its retry, and the workers that survive train it.

**The first wave.** A pruner prunes nothing until the study holds a few ``COMPLETE`` trials
(``MedianPruner``'s ``n_startup_trials``; one for ``SuccessiveHalvingPruner`` with its
"auto" resource). If every slot opened at once, the first ``slots`` trials would all train to
the end unpruned. So the search starts with a *first wave* of the pruner's start-up trials (at
most ``slots``), and opens the other slots once these have completed; from then on a trial is
asked whenever a slot is free. The wave is the study's, shared by every worker. The sampler's
own start-up (``TPESampler``'s ``n_startup_trials`` random trials) is not waited for: its
trials are random whenever they are asked, and a first wave that waited for them let every one
of them train unpruned (measured in ``benchmarks/bench_search.py``: 1.5 to 2.5 times the
epochs with ``MedianPruner``, a worse median trial with ``SuccessiveHalvingPruner``). Nor does a
trial past the sampler's start-up wait for the start-up trials to finish (it would then be
sampled knowing them all, as in a sequential search): with pruners that need no start-up
(Hyperband, successive halving with ``min_resource``) that moved neither the best nor the
median trial beyond the seed-to-seed noise (10 seeds), and it idles slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "PAST_N_TRIALS",
    "counted",
    "grid_taken",
    "past_n_trials",
    "pruner_startup",
    "retried_numbers",
]

PAST_N_TRIALS = "asked past n_trials; not trained"
"""The user attribute ``fitstream`` of a trial a worker asked once the study was full."""


def retried_numbers(trials: Sequence[Any]) -> set[int]:
    """The numbers of the trials that a later trial retries (Optuna's ``retry_history``)."""
    out: set[int] = set()
    for trial in trials:
        history = trial.system_attrs.get("retry_history")
        if isinstance(history, list):
            out.update(n for n in history if isinstance(n, int))
        first = trial.system_attrs.get("failed_trial")
        if isinstance(first, int):
            out.add(first)
    return out


def counted(trials: Sequence[Any], fail: Any) -> int:
    """How many of ``trials`` count against ``n_trials`` (see the module's rule).

    Example:
        >>> from types import SimpleNamespace as T
        >>> trials = [T(number=0, state="COMPLETE", system_attrs={}, user_attrs={}),
        ...           T(number=1, state="FAIL", system_attrs={}, user_attrs={}),
        ...           T(number=2, state="WAITING", system_attrs={"failed_trial": 1},
        ...             user_attrs={}),
        ...           T(number=3, state="FAIL", system_attrs={},
        ...             user_attrs={"fitstream": PAST_N_TRIALS})]
        >>> counted(trials, "FAIL")
        2
    """
    retried = retried_numbers(trials)
    return sum(1 for t in trials if _counts(t, retried, fail))


def _counts(trial: Any, retried: set[int], fail: Any) -> bool:
    """The rule: every asked trial but a retried ``FAIL`` and one asked past ``n_trials``."""
    return not (
        trial.state == fail
        and (trial.number in retried or trial.user_attrs.get("fitstream") == PAST_N_TRIALS)
    )


def past_n_trials(trials: Sequence[Any], number: int, n_trials: int, fail: Any) -> bool:
    """Whether trial ``number`` comes after ``n_trials`` trials that count (see the module).

    The trials that count are put in order, a retry at the place of the trial it retries, so
    that workers asking at the same moment agree on which of their trials is one too many: the
    first ``n_trials`` are trained, the rest not. (Each counting the study as it found it, two
    workers that asked the last trial together both gave theirs up, and the study ended one
    trial short.)

    Example:
        >>> from types import SimpleNamespace as T
        >>> trials = [T(number=n, state="RUNNING", system_attrs={}, user_attrs={})
        ...           for n in range(4)]
        >>> [past_n_trials(trials, n, 3, "FAIL") for n in range(4)]
        [False, False, False, True]
    """
    retried = retried_numbers(trials)

    def place(trial: Any) -> int:
        first = trial.system_attrs.get("failed_trial")
        return first if isinstance(first, int) else int(trial.number)

    mine = next((place(t) for t in trials if t.number == number), number)
    before = sum(1 for t in trials if place(t) < mine and _counts(t, retried, fail))
    return before >= n_trials


def grid_taken(study: Any) -> bool:
    """Whether every point of a ``GridSampler``'s grid is running or done (False otherwise).

    ``GridSampler.is_exhausted`` says so only once every point is *finished*; asking while
    the last points run would train one of them twice.
    """
    sampler = study.sampler
    size = getattr(sampler, "_n_min_trials", None)
    space = getattr(sampler, "_search_space", None)
    if type(sampler).__name__ != "GridSampler" or not isinstance(size, int):
        return False
    taken = {
        t.system_attrs["grid_id"]
        for t in study.get_trials(deepcopy=False)
        if "grid_id" in t.system_attrs and t.system_attrs.get("search_space") == space
    }
    return len(taken) >= size


def pruner_startup(pruner: Any) -> int:
    """The ``COMPLETE`` trials ``pruner`` needs before it can prune anything.

    ``MedianPruner``/``PercentilePruner``: their ``n_startup_trials`` (at least 1: with no
    complete trial they never prune). ``SuccessiveHalvingPruner`` with ``min_resource="auto"``
    and ``HyperbandPruner`` with ``max_resource="auto"``: 1 (the first complete trial sets the
    resource). ``WilcoxonPruner``: 1 (it compares with the best trial). ``PatientPruner``: its
    wrapped pruner's. ``ThresholdPruner``, ``NopPruner`` and other pruners: 0.
    """
    name = type(pruner).__name__
    if name in ("MedianPruner", "PercentilePruner"):
        return max(1, int(getattr(pruner, "_n_startup_trials", 1)))
    if name == "SuccessiveHalvingPruner":
        return 1 if getattr(pruner, "_min_resource", None) is None else 0
    if name == "HyperbandPruner":
        return 1 if getattr(pruner, "_max_resource", None) == "auto" else 0
    if name == "WilcoxonPruner":
        return 1
    if name == "PatientPruner":
        inner = getattr(pruner, "_wrapped_pruner", None)
        return 0 if inner is None else pruner_startup(inner)
    return 0
