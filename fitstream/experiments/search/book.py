"""The study's bookkeeping for one worker: asking, telling, counting, and the faults.

Everything the worker writes to the study goes through :class:`Book`, each write whole and
retried while the database is locked (:mod:`.writes`). Trials are asked only when a slot can
train them, under the counting rules of :mod:`.rules`; each asked trial is held (its heartbeat
kept, :mod:`.heartbeat`) until it is told how it ended. When the worker stops early (Ctrl-C, an
error, the consumer closing the stream) every held trial is told ``FAIL``; an interrupted one
is also handed to the stale-trial callback, so Optuna's retry callback enqueues it again and the
next run of the search trains it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .asking import asker
from .heartbeat import STAMP, Heartbeat
from .rules import PAST_N_TRIALS, counted, grid_taken, past_n_trials, pruner_startup
from .trials import TrialRun
from .writes import already_finished, read, write

__all__ = ["Book"]

_LOG = logging.getLogger("fitstream.search")


class Book:
    """What one worker asks of the study and tells it, and what it counts there."""

    def __init__(
        self, study: Any, optuna: Any, *, n_trials: int, slots: int, startup: int | None,
        pruning: bool, heartbeat: Heartbeat,
    ) -> None:  # fmt: skip
        self.study, self.optuna, self.n_trials = study, optuna, n_trials
        self.states = optuna.trial.TrialState
        self.minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        if startup is None:
            startup = pruner_startup(study.pruner) if pruning else 0
        self.startup = min(startup, slots)  # the first wave, in trials
        self.opened = self.startup == 0
        self.heartbeat = heartbeat
        self.held: dict[int, Any] = {}  # number -> trial, every trial asked and not yet told
        self.dropped: set[int] = set()  # ids of held trials another worker finished
        self.exhausted = False

    # -- reading -------------------------------------------------------------------------------

    def trials(self) -> list[Any]:
        """The study's trials, of every worker (not copied)."""
        return list(read(self.study.get_trials, deepcopy=False))

    def counts(self, trials: list[Any] | None = None) -> dict[str, int]:
        """The study's trials by state, of every worker (of ``trials``, read once, if given)."""
        trials = self.trials() if trials is None else trials
        s = self.states
        return {
            "trials_done": sum(t.state == s.COMPLETE for t in trials),
            "trials_pruned": sum(t.state == s.PRUNED for t in trials),
            "trials_running": sum(t.state == s.RUNNING for t in trials),
            "trials_failed": sum(t.state == s.FAIL for t in trials),
        }

    def waiting(self, trials: list[Any] | None = None) -> int:
        """Trials enqueued to be run (retries of failed trials, or the user's own)."""
        trials = self.trials() if trials is None else trials
        return sum(t.state == self.states.WAITING for t in trials)

    def may_ask(self) -> bool:
        """Whether a free slot may ask the study for a trial now (see :mod:`.rules`)."""
        trials = self.trials()
        if self.waiting(trials):
            return True
        if self.exhausted:
            return False
        if counted(trials, self.states.FAIL) >= self.n_trials:
            return False
        if read(grid_taken, self.study):  # every grid point is running or done
            return False
        if self.opened:
            return True
        s = self.states
        complete = sum(t.state == s.COMPLETE for t in trials)
        if complete >= self.startup:
            self.opened = True
            return True
        live = sum(t.state in (s.RUNNING, s.WAITING) for t in trials)
        return live == 0 or live + complete < self.startup

    # -- asking --------------------------------------------------------------------------------

    def ask(self) -> Any | None:
        """Ask one trial (a waiting retry first); ``None`` if the study is full."""
        stamp = STAMP if self.heartbeat.on else None
        # held in the same shelter from Ctrl-C as the ask: never RUNNING and unknown
        trial = write(asker(self.study, self.optuna, stamp), done=self._hold)
        self.heartbeat.hold(trial)
        if past_n_trials(self.trials(), trial.number, self.n_trials, self.states.FAIL):
            write(trial.set_user_attr, "fitstream", PAST_N_TRIALS)
            self.tell_fail(trial, PAST_N_TRIALS, retry=False)
            self.exhausted = True
            return None
        return trial

    # -- telling -------------------------------------------------------------------------------

    def counted(self, trials: list[Any] | None = None) -> int:
        """The trials of the study that count against ``n_trials`` (see :mod:`.rules`)."""
        return counted(self.trials() if trials is None else trials, self.states.FAIL)

    def report(self, run: TrialRun, value: float, *, ask: bool = True) -> bool:
        """Report the trial's value at its step; with ``ask``, whether its pruner prunes it."""
        trial = run.trial
        if not self._tellable(trial):
            return False
        try:
            write(trial.report, value, run.steps)
            return ask and bool(write(trial.should_prune))
        except Exception as exc:
            if not already_finished(exc):
                raise
            self.heartbeat.lost.add(trial._trial_id)  # failed as stale meanwhile
            self._drop(trial, "another worker failed it as stale; its retry trains elsewhere")
            return False

    def tell_complete(self, run: TrialRun) -> str:
        """Tell a trial that trained all its epochs its best value (FAIL if all were NaN)."""
        trial = run.trial
        for name, value in run.attrs().items():
            self.attr(trial, name, value)
        best = run.best_value
        if best is None:
            self.attr(trial, "fail_reason", "every value of the key was NaN")
            self._tell(trial, state=self.states.FAIL)
            return "FAIL"
        self._tell(trial, values=best)
        return "COMPLETE"

    def tell_pruned(self, run: TrialRun) -> str:
        """Tell a trial its pruner pruned it."""
        for name, value in run.attrs().items():
            self.attr(run.trial, name, value)
        self._tell(run.trial, state=self.states.PRUNED)
        return "PRUNED"

    def tell_fail(self, trial: Any, reason: str, *, retry: bool) -> None:
        """Tell ``trial`` FAIL with ``reason``; with ``retry``, hand it to the retry callback."""
        self.attr(trial, "fail_reason", reason)
        if not self._tell(trial, state=self.states.FAIL):
            return
        callback = self.heartbeat.callback
        if retry and callback is not None:
            frozen = self.study._storage.get_trial(trial._trial_id)
            write(callback, self.study, frozen)

    def fail_held(self, reason: str, *, retry: bool) -> None:
        """Tell every held trial FAIL (the worker stops); errors are logged, never raised."""
        for trial in list(self.held.values()):
            try:
                self.tell_fail(trial, reason, retry=retry)
            except BaseException as exc:  # keep going (a second Ctrl-C too): none stays RUNNING
                if trial.number in self.held:
                    _LOG.error("search: could not tell trial %d FAIL: %r", trial.number, exc)
                    self._forget(trial)

    def lost(self, trial: Any) -> bool:
        """Whether another worker finished ``trial`` (failed it as stale) while this one held it."""
        return trial._trial_id in self.heartbeat.lost or trial._trial_id in self.dropped

    # -- the writes ----------------------------------------------------------------------------

    def attr(self, trial: Any, name: str, value: Any) -> None:
        """Set a user attribute of a held trial (NaN kept as None, as JSON allows)."""
        if self._tellable(trial):
            write(trial.set_user_attr, name, _plain(value))

    def _tellable(self, trial: Any) -> bool:
        if trial.number not in self.held:
            return False
        if self.lost(trial):
            self._drop(trial, "another worker failed it as stale; its retry trains elsewhere")
            return False
        return True

    def _tell(self, trial: Any, **how: Any) -> bool:
        """Tell ``trial`` how it ended; False when another worker had finished it already."""
        if not self._tellable(trial):
            return False
        try:
            write(self.study.tell, trial, done=lambda _: self._forget(trial), **how)
        except (RuntimeError, ValueError) as exc:
            if already_finished(exc) or isinstance(exc, ValueError):
                # finished by another worker between tell's own check and its write, or before
                state = self.study._storage.get_trial(trial._trial_id).state
                if not state.is_finished():
                    raise
                self._drop(trial, f"it was already {state.name} ({exc})")
                return False
            if "Study.stop" not in str(exc):
                raise
            self.exhausted = True  # GridSampler stops the study once its grid is used up
        self._forget(trial)
        return True

    def _hold(self, trial: Any) -> None:
        self.held[trial.number] = trial

    def _forget(self, trial: Any) -> None:
        self.held.pop(trial.number, None)
        self.heartbeat.release(trial)

    def _drop(self, trial: Any, why: str) -> None:
        self.dropped.add(trial._trial_id)
        _LOG.warning("search: trial %d is no longer this worker's: %s", trial.number, why)
        self.held.pop(trial.number, None)
        self.heartbeat.release(trial)


def _plain(value: Any) -> Any:
    """A value Optuna's storages keep as JSON: NaN as None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
