"""Asking a trial that carries its heartbeat stamp from its first write.

``study.ask()`` makes the trial RUNNING in one write and lets the caller start its heartbeat in
the next. A worker killed between the two (the sampler runs in between) leaves a RUNNING trial
that no heartbeat ever judges: no worker fails it, no retry trains it, and the study ends one
trial short. Optuna's own ``study.optimize`` has the same window.

:func:`asker` closes it. A new trial is created RUNNING with the stamp already in its system
attributes, in one write (one journal record, one RDB transaction). A waiting trial (a retry, or
one the user enqueued) is stamped first and then taken, as ``study.ask()`` takes it: the first
worker whose change to RUNNING lands has it. So every RUNNING trial of a search worker carries a
stamp that ages once its worker is gone.

One case is left to chance: a plain ``study.optimize`` in the same study that takes a waiting
trial in the instant between a search worker's stamp and its own attempt runs a trial with a
stamp that nobody renews; it is failed as stale after the grace period and its retry trains it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .writes import already_finished

__all__ = ["asker"]


def asker(study: Any, optuna: Any, stamp: str | None) -> Callable[[], Any]:
    """A function that asks ``study`` for one trial, as ``study.ask()`` does, stamped.

    The returned function may be called again after a failed try (a locked database): the trial
    it took on the first try is the one it returns, never a second one.

    Args:
        study: The study.
        optuna: The optuna module.
        stamp: The system attribute that holds the time of the trial's last sign of life;
            ``None``: no stamp (a worker that keeps no heartbeat).

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study()
        >>> study.enqueue_trial({"x": 0.5})
        >>> trial = asker(study, optuna, "heartbeat")()
        >>> trial.suggest_float("x", 0, 1), "heartbeat" in study.trials[0].system_attrs
        (0.5, True)
        >>> asker(study, optuna, "heartbeat")().number
        1
    """
    taken: list[int] = []

    def ask() -> Any:
        if not taken:
            taken.append(_take(study, optuna, stamp))
        local = getattr(study, "_thread_local", None)
        if local is not None:  # the samplers' cache of the study's trials: read them again
            local.cached_all_trials = None
        return optuna.trial.Trial(study, taken[0])

    return ask


def _take(study: Any, optuna: Any, stamp: str | None) -> int:
    """The id of a waiting trial this worker took, else of a new one; RUNNING and stamped."""
    storage, running = study._storage, optuna.trial.TrialState.RUNNING
    waiting = (optuna.trial.TrialState.WAITING,)
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=waiting):
        try:
            if stamp is not None:
                storage.set_trial_system_attr(trial._trial_id, stamp, time.time())
            if storage.set_trial_state_values(trial._trial_id, state=running):
                return int(trial._trial_id)
        except Exception as exc:
            if not already_finished(exc):
                raise
        # another worker took it first, or finished it
    attrs = {} if stamp is None else {stamp: time.time()}
    template = optuna.trial.create_trial(state=running, system_attrs=attrs)
    return int(storage.create_new_trial(study._study_id, template_trial=template))
