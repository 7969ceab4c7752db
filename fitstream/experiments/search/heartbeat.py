"""A heartbeat for every trial a worker holds, and the failing of the trials of dead workers.

Each trial a search worker holds carries a stamp in its system attributes,
``fitstream:heartbeat``: the time of its last sign of life. The trial is born with it
(:mod:`.asking`), and the worker's heartbeat thread renews it every interval. A running trial
whose stamp is older than the grace period belongs to a worker that is gone: another worker
fails it and hands it to the stale-trial callback (``RetryHeartbeatStaleTrialCallback`` enqueues
it again), exactly as Optuna does with its own heartbeat. Only trials that carry a stamp, those
of a search worker, are ever judged this way: a trial of a plain ``study.optimize`` in the same
study is left alone.

Optuna's RDB storage keeps a heartbeat of its own when it is built with ``heartbeat_interval``
(``optuna.storages.fail_stale_trials`` judges it, with the interval, grace period and callback
of the storage). There a held trial's heartbeat is Optuna's, so that a plain ``study.optimize``
in the same study sees the search's trials alive, and its stamp says :data:`NATIVE` once the
first one is recorded: Optuna's check judges it from then on. Until then (a worker killed
between the trial's birth and its first heartbeat) the birth stamp is judged as above.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from .checks import check_seconds
from .writes import already_finished, read, write

__all__ = [
    "DEFAULT_INTERVAL",
    "NATIVE",
    "STAMP",
    "Heartbeat",
    "choose_heartbeat",
    "default_callback",
]

STAMP = "fitstream:heartbeat"
NATIVE = "optuna"  # the stamp of a trial that Optuna's own heartbeat judges
DEFAULT_INTERVAL = 60.0  # seconds between beats where the storage is shared and none is given
_LOG = logging.getLogger("fitstream.search")


def default_callback(optuna: Any, max_retry: int = 3) -> Callable[[Any, Any], None]:
    """Optuna's retry callback for stale trials (``RetryFailedTrialCallback`` before 4.9)."""
    storages = optuna.storages
    kind = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if kind is None:  # Optuna before 4.9
        kind = storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in every Optuna so far
        callback: Callable[[Any, Any], None] = kind(max_retry=max_retry)
    return callback


def _native(storage: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage))


def _storage_callback(storage: Any) -> Callable[[Any, Any], None] | None:
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    if getter is None:  # Optuna before 4.9
        getter = storage.get_failed_trial_callback
    callback: Callable[[Any, Any], None] | None = getter()
    return callback


class Heartbeat:
    """The heartbeat of the trials one worker holds, and the check for stale ones.

    Args:
        study: The study.
        optuna: The optuna module.
        interval: Seconds between beats; ``None``: no heartbeat (a storage in memory).
        grace: Seconds without a beat after which another worker fails a trial.
        callback: Called as ``callback(study, frozen_trial)`` for each trial failed as stale.
    """

    def __init__(
        self,
        study: Any,
        optuna: Any,
        *,
        interval: float | None,
        grace: float | None,
        callback: Callable[[Any, Any], None] | None,
    ) -> None:
        self.study, self.optuna = study, optuna
        self.storage = study._storage
        self.native = _native(self.storage)
        if self.native:
            interval = float(self.storage.get_heartbeat_interval())
            rdb = getattr(self.storage, "_backend", self.storage)  # inside Optuna's cache
            grace = getattr(rdb, "grace_period", None) or 2 * interval
            callback = _storage_callback(self.storage)
        self.interval, self.callback = interval, callback
        self.grace = grace if grace is not None else (None if interval is None else 2 * interval)
        self.held: dict[int, int] = {}  # trial id -> number
        self.lost: set[int] = set()  # held trials that another worker finished (failed as stale)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checked = 0.0

    @property
    def on(self) -> bool:
        """Whether this worker keeps a heartbeat at all."""
        return self.interval is not None

    def hold(self, trial: Any) -> None:
        """Start beating for ``trial`` (born stamped), and start the thread if it is not."""
        if not self.on:
            return
        if self.native:
            write(self.storage.record_heartbeat, trial._trial_id)
            write(self.storage.set_trial_system_attr, trial._trial_id, STAMP, NATIVE)
        with self._lock:
            self.held[trial._trial_id] = trial.number
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="fitstream-search-heartbeat", daemon=True
            )
            self._thread.start()

    def release(self, trial: Any) -> None:
        """Stop beating for ``trial`` (it is finished)."""
        with self._lock:
            self.held.pop(trial._trial_id, None)

    def close(self) -> None:
        """Stop the thread and wait for it; nothing of the heartbeat outlives this call."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Record a heartbeat for every held trial (run by the thread every interval)."""
        with self._lock:
            held = list(self.held)
        for trial_id in held:
            try:  # a stopping thread tries once, not for half a minute
                if self.native:
                    write(self.storage.record_heartbeat, trial_id, give_up=self._stop)
                else:
                    write(self.storage.set_trial_system_attr, trial_id, STAMP, time.time(),
                          give_up=self._stop)  # fmt: skip
            except Exception as exc:
                if already_finished(exc):  # failed as stale by another worker
                    with self._lock:
                        self.lost.add(trial_id)
                else:  # a beat missed is retried at the next interval
                    _LOG.warning("search: the heartbeat of trial id %d failed: %r", trial_id, exc)

    def fail_stale(self, *, force: bool = False) -> list[int]:
        """Fail the stale trials of other workers; return their numbers.

        Run at the start and then at most once per interval (``force`` runs it now).
        """
        if not self.on:
            return []
        now = time.monotonic()
        if not force and now - self._checked < (self.interval or 0.0):
            return []
        self._checked = now
        failed = set(self._fail_native()) if self.native else set()
        return sorted(failed | set(self._fail_stamped()))

    def _fail_native(self) -> list[int]:
        before = self._running_numbers()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fail_stale_trials is experimental
            write(self.optuna.storages.fail_stale_trials, self.study)
        return sorted(before - self._running_numbers())

    def _running_numbers(self) -> set[int]:
        states = (self.optuna.trial.TrialState.RUNNING,)
        return {t.number for t in read(self.study.get_trials, deepcopy=False, states=states)}

    def _fail_stamped(self) -> list[int]:
        assert self.grace is not None
        fail = self.optuna.trial.TrialState.FAIL
        failed = []
        for trial in self.others_running():
            if trial.system_attrs[STAMP] == NATIVE:
                continue  # Optuna's own heartbeat judges it
            if time.time() - last_sign_of_life(trial) <= self.grace:
                continue
            try:
                if not write(self.storage.set_trial_state_values, trial._trial_id, state=fail):
                    continue
            except Exception as exc:
                if already_finished(exc):
                    continue  # another worker failed it first, and called the callback
                raise
            failed.append(trial.number)
            if self.callback is not None:
                frozen = copy.deepcopy(self.storage.get_trial(trial._trial_id))
                write(self.callback, self.study, frozen)
        return failed

    def others_running(self) -> list[Any]:
        """The running trials of other search workers (those that carry a heartbeat stamp)."""
        states = (self.optuna.trial.TrialState.RUNNING,)
        trials = read(self.study.get_trials, deepcopy=False, states=states)
        with self._lock:
            mine = set(self.held)
        return [t for t in trials if t._trial_id not in mine and STAMP in t.system_attrs]


def last_sign_of_life(trial: Any) -> float:
    """The latest of a trial's heartbeat stamp and its start, in seconds since the epoch."""
    stamp = trial.system_attrs.get(STAMP)
    started = trial.datetime_start.timestamp() if trial.datetime_start is not None else 0.0
    return max(float(stamp) if isinstance(stamp, int | float) else 0.0, started)


def choose_heartbeat(
    study: Any, optuna: Any, *, interval: object, grace: object, callback: object, func: str
) -> Heartbeat:
    """The worker's heartbeat from ``search``'s arguments, checked.

    Optuna's own where the study's storage keeps one (then none of the three may be given),
    else the stamps, renewed every ``interval`` seconds (60 on a storage other processes can
    share), judged stale after ``grace`` and handed to ``callback``.
    """
    every = check_seconds(interval, func=func, arg="heartbeat_interval")
    wait = check_seconds(grace, func=func, arg="grace_period")
    if callback is not None and not callable(callback):
        raise TypeError(
            f"{func}: 'stale_trial_callback' must be callable as callback(study, trial), such "
            f"as optuna.storages.RetryHeartbeatStaleTrialCallback(), got {callback!r}"
        )
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    if is_heartbeat_enabled(storage):
        given = [n for n, v in (("heartbeat_interval", every), ("grace_period", wait),
                                ("stale_trial_callback", callback)) if v is not None]  # fmt: skip
        if given:
            raise ValueError(
                f"{func}: the study's storage keeps Optuna's own heartbeat "
                f"(heartbeat_interval={storage.get_heartbeat_interval()}), which the search "
                f"uses; leave {given} to the storage"
            )
        return Heartbeat(study, optuna, interval=None, grace=None, callback=None)
    if every is None and not isinstance(storage, optuna.storages.InMemoryStorage):
        every = DEFAULT_INTERVAL
    if every is not None and wait is not None and wait <= every:
        raise ValueError(
            f"{func}: 'grace_period' ({wait} s) must be longer than 'heartbeat_interval' "
            f"({every} s), or a live worker's trials would be failed between two beats"
        )
    chosen = callback if callback is not None else default_callback(optuna)
    return Heartbeat(study, optuna, interval=every, grace=wait, callback=chosen)
