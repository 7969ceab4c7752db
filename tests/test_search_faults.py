"""``search`` when things go wrong: interrupts, errors, locked storages, dead workers' trials.

Every exit path leaves no trial ``RUNNING`` and no thread behind; an interrupted trial is
enqueued again (Optuna's retry callback), so the next run of the search trains it.
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import augment, search, search_events, validation_loss

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)
States = optuna.trial.TrialState

from fitstream.experiments.search.asking import asker  # noqa: E402
from fitstream.experiments.search.heartbeat import (  # noqa: E402
    NATIVE,
    STAMP,
    Heartbeat,
    default_callback,
)
from fitstream.experiments.search.writes import deferred_interrupt, is_locked, write  # noqa: E402

g = torch.Generator().manual_seed(0)
X = torch.randn(64, 3, generator=g)
Y = X @ torch.tensor([[1.0], [-1.0], [0.5]])
STAGES = [augment(validation_loss((X, Y), nn.MSELoss()))]


def _build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 1)
    lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _storage(kind: str, folder: Path) -> Any:
    if kind == "journal":
        backend = optuna.storages.journal.JournalFileBackend(str(folder / "search.log"))
        return optuna.storages.JournalStorage(backend)
    if kind == "sqlite":
        return f"sqlite:///{folder / 'search.db'}"
    return optuna.storages.InMemoryStorage()


def _study(kind: str, folder: Path) -> Any:
    return optuna.create_study(
        storage=_storage(kind, folder),
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )


def _options(**kwargs: Any) -> dict[str, Any]:
    base = {"key": "val_loss", "epochs": 3, "n_trials": 6, "slots": 3, "batch_size": 16,
            "stages": STAGES}  # fmt: skip
    return {**base, **kwargs}


def _states(study: Any) -> list[Any]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def _stop_at(calls: int, error: BaseException) -> Any:
    seen = 0

    def stage(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal seen
        seen += 1
        if seen == calls:
            raise error
        return {}

    return augment(stage)


KINDS = ["memory", "journal", "sqlite"]


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_fails_the_held_trials_enqueues_them_again_and_reaches_the_user(
    kind: str, tmp_path: Path
) -> None:
    study = _study(kind, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        search(study, _build, (X, Y), nn.MSELoss(),
               **_options(stages=[*STAGES, _stop_at(3, KeyboardInterrupt())]))  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    assert States.RUNNING not in _states(study)
    failed = [t for t in trials if t.state == States.FAIL]
    assert len(failed) == 3
    assert all("KeyboardInterrupt" in t.user_attrs["fail_reason"] for t in failed)
    waiting = [t for t in trials if t.state == States.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == [t.number for t in failed]
    # the next run trains them again, and the study ends with n_trials finished
    search(study, _build, (X, Y), nn.MSELoss(), **_options())
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == States.COMPLETE]
    assert len(complete) == 6
    assert States.RUNNING not in _states(study)
    assert States.WAITING not in _states(study)
    retried = {
        t.system_attrs["failed_trial"]: t for t in complete if "failed_trial" in t.system_attrs
    }
    assert sorted(retried) == [t.number for t in failed]
    for number, retry in retried.items():  # the same setting, trained from its first epoch
        assert retry.params == trials[number].params
        assert sorted(retry.intermediate_values) == [1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_in_build_fails_that_trial_too(kind: str, tmp_path: Path) -> None:
    study = _study(kind, tmp_path)

    def build(trial: Any) -> Any:
        if trial.number == 4:
            raise KeyboardInterrupt
        return _build(trial)

    with pytest.raises(KeyboardInterrupt):
        search(study, build, (X, Y), nn.MSELoss(), **_options())
    trials = study.get_trials(deepcopy=False)
    assert States.RUNNING not in _states(study)
    assert trials[4].state == States.FAIL
    assert "KeyboardInterrupt" in trials[4].user_attrs["fail_reason"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_in_training_fails_the_held_trials_without_retry(
    kind: str, tmp_path: Path
) -> None:
    study = _study(kind, tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        search(study, _build, (X, Y), nn.MSELoss(),
               **_options(stages=[*STAGES, _stop_at(2, RuntimeError("boom"))]))  # fmt: skip
    assert _states(study) == [States.FAIL] * 3
    assert all("RuntimeError: boom" in t.user_attrs["fail_reason"] for t in study.trials)


def test_closing_the_events_early_fails_and_enqueues_the_held_trials() -> None:
    study = _study("memory", Path())
    events = search_events(study, _build, (X, Y), nn.MSELoss(), **_options())
    next(events)
    events.close()
    assert sorted(s.name for s in _states(study)) == ["FAIL"] * 3 + ["WAITING"] * 3


def test_nothing_is_left_running_on_any_exit_path(tmp_path: Path) -> None:
    before = threading.active_count()
    study = _study("journal", tmp_path)
    search(study, _build, (X, Y), nn.MSELoss(), **_options(heartbeat_interval=0.05))
    (tmp_path / "x").mkdir()
    interrupted = _study("journal", tmp_path / "x")
    with pytest.raises(KeyboardInterrupt):
        search(interrupted, _build, (X, Y), nn.MSELoss(),
               **_options(stages=[*STAGES, _stop_at(2, KeyboardInterrupt())],
                          heartbeat_interval=0.05))  # fmt: skip
    events = search_events(study, _build, (X, Y), nn.MSELoss(), **_options(n_trials=9))
    next(events)
    events.close()
    time.sleep(0.1)
    assert threading.active_count() == before
    assert not [t for t in threading.enumerate() if "heartbeat" in t.name]


# -- the storage writes ---------------------------------------------------------------------


def test_a_locked_write_is_retried_and_another_error_is_raised_at_once() -> None:
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise optuna.exceptions.StorageInternalError("(OperationalError) database is locked")
        return "written"

    assert write(flaky) == "written"
    assert calls == 3

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise optuna.exceptions.StorageInternalError("value exceeds max length")

    calls = 0
    with pytest.raises(optuna.exceptions.StorageInternalError, match="max length"):
        write(broken)
    assert calls == 1
    assert is_locked(RuntimeError("x", "y")) is False


def test_ctrl_c_inside_a_write_waits_for_the_write_then_is_raised() -> None:
    done = []

    def a_write() -> None:
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("the write finished")

    with pytest.raises(KeyboardInterrupt):
        a_write()
    assert done == ["the write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_users_own_interrupt_handler_is_called_after_the_write() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: seen.append(number))
    try:
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the heartbeat and the trials of dead workers -------------------------------------------


def test_a_stale_trial_of_a_dead_worker_is_failed_and_retried_once(tmp_path: Path) -> None:
    study = _study("journal", tmp_path)
    dead = study.ask()
    dead.suggest_float("lr", 1e-3, 1e-1, log=True)
    study._storage.set_trial_system_attr(dead._trial_id, STAMP, time.time())
    plain = study.ask()  # a trial of a plain study.optimize: no stamp, never judged
    alive = study.ask()
    time.sleep(0.3)  # the dead worker's last beat, and every start, older than the grace
    study._storage.set_trial_system_attr(alive._trial_id, STAMP, time.time())
    first = Heartbeat(study, optuna, interval=0.1, grace=0.2, callback=default_callback(optuna))
    second = Heartbeat(study, optuna, interval=0.1, grace=0.2, callback=default_callback(optuna))
    assert first.fail_stale(force=True) == [dead.number]
    assert second.fail_stale(force=True) == []  # already failed: not retried twice
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == States.FAIL
    assert trials[plain.number].state == trials[alive.number].state == States.RUNNING
    retries = [t for t in trials if t.state == States.WAITING]
    assert [(t.system_attrs["failed_trial"], t.params) for t in retries] == [
        (dead.number, trials[dead.number].params)
    ]


def test_an_ask_retried_after_a_locked_read_takes_one_trial_born_stamped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.01})
    real, reads = study._storage.get_trial, []

    def locked_once(trial_id: int) -> Any:
        reads.append(trial_id)
        if len(reads) == 1:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return real(trial_id)

    monkeypatch.setattr(study._storage, "get_trial", locked_once)
    trial = write(asker(study, optuna, STAMP))
    assert reads == [trial._trial_id, trial._trial_id]  # tried again on the trial it took
    assert trial.suggest_float("lr", 1e-3, 1e-1) == 0.01  # the waiting trial, taken
    fresh = write(asker(study, optuna, STAMP))  # nothing waits: a new trial
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [trial.number, fresh.number] == [0, 1]
    assert all(t.state == States.RUNNING and STAMP in t.system_attrs for t in trials)
    assert STAMP not in write(asker(study, optuna, None)).study.trials[2].system_attrs


def test_a_trial_that_optunas_own_heartbeat_judges_is_left_to_it(tmp_path: Path) -> None:
    study = _study("journal", tmp_path)
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, STAMP, NATIVE)
    time.sleep(0.3)  # its start older than the grace: a numeric stamp would be stale
    beat = Heartbeat(study, optuna, interval=0.1, grace=0.2, callback=None)
    assert beat.fail_stale(force=True) == []
    assert _states(study) == [States.RUNNING]


def test_the_heartbeat_keeps_held_trials_fresh_and_stops(tmp_path: Path) -> None:
    study = _study("journal", tmp_path)
    trial = study.ask()
    beat = Heartbeat(study, optuna, interval=0.05, grace=0.2, callback=None)
    beat.hold(trial)
    time.sleep(0.4)
    other = Heartbeat(study, optuna, interval=0.05, grace=0.2, callback=None)
    assert other.fail_stale(force=True) == []  # beaten every 0.05 s: never stale
    beat.close()
    assert not [t for t in threading.enumerate() if "heartbeat" in t.name]
    time.sleep(0.3)
    assert other.fail_stale(force=True) == [trial.number]  # the beats stopped: stale


@pytest.mark.parametrize("kind", KINDS)
def test_a_trial_failed_as_stale_while_held_is_dropped_by_its_worker(
    kind: str, tmp_path: Path
) -> None:
    study = _study(kind, tmp_path)
    taken = []

    def steal(event: dict[str, Any]) -> dict[str, Any]:
        if not taken:  # another worker judges trial 0 stale and fails it
            taken.append(study.trials[0].number)
            study._storage.set_trial_state_values(study.trials[0]._trial_id, States.FAIL)
        return {}

    search(study, _build, (X, Y), nn.MSELoss(), **_options(stages=[*STAGES, augment(steal)]))
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == States.FAIL
    assert States.RUNNING not in _states(study)
    assert sum(t.state == States.COMPLETE for t in trials) == 5


@pytest.mark.parametrize("kind", KINDS)
def test_a_trial_failed_between_tells_check_and_its_write_is_dropped(
    kind: str, tmp_path: Path
) -> None:
    # The race of a live worker whose trial another worker fails as stale just as it tells the
    # trial's value: Study.tell found it RUNNING, then its write finds it finished.
    stolen: list[int] = []

    class Stealing(optuna.samplers.RandomSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            if not stolen:  # through a storage of its own, as another worker's
                stolen.append(trial.number)
                other = study._storage if kind == "memory" else _storage(kind, tmp_path)
                if isinstance(other, str):
                    other = optuna.storages.RDBStorage(other)
                other.set_trial_state_values(trial._trial_id, States.FAIL)
            super().after_trial(study, trial, state, values)

    study = optuna.create_study(
        storage=_storage(kind, tmp_path), sampler=Stealing(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )  # fmt: skip
    search(study, _build, (X, Y), nn.MSELoss(), **_options())
    trials = study.get_trials(deepcopy=False)
    assert stolen == [0]
    assert trials[0].state == States.FAIL
    assert States.RUNNING not in _states(study)
    assert sum(t.state == States.COMPLETE for t in trials) == 5


def test_optunas_own_heartbeat_is_used_where_the_storage_keeps_one(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Optuna 4.0, the floor, names it failed_trial_callback
        accepted = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = next(
            name
            for name in ("heartbeat_stale_trial_callback", "failed_trial_callback")
            if name in accepted
        )
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'beat.db'}", heartbeat_interval=1, grace_period=3,
            **{callback: default_callback(optuna)},
        )  # fmt: skip
    study = optuna.create_study(storage=storage, pruner=optuna.pruners.NopPruner())
    search(study, _build, (X, Y), nn.MSELoss(), **_options())
    assert _states(study) == [States.COMPLETE] * 6
    # each born stamped, then judged by Optuna's heartbeat once it had one
    assert [t.system_attrs[STAMP] for t in study.trials] == [NATIVE] * 6
    with pytest.raises(ValueError, match=r"keeps Optuna's own heartbeat.*heartbeat_interval"):
        search(study, _build, (X, Y), nn.MSELoss(), **_options(heartbeat_interval=5))


def test_a_ctrl_c_swallowed_on_its_way_still_stops_the_search() -> None:
    # Python drops a KeyboardInterrupt raised in a garbage collector's callback ("Exception
    # ignored"); a stage that swallows it stands in for one here.
    study = _study("memory", Path())
    calls = 0

    def swallow(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass  # lost, as in a __del__
        return {}

    with pytest.raises(KeyboardInterrupt):
        search(study, _build, (X, Y), nn.MSELoss(), **_options(stages=[*STAGES, augment(swallow)]))
    assert calls == 2  # no epoch after the interrupt
    assert States.RUNNING not in _states(study)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_workers_that_ask_the_last_trial_together_train_exactly_one_of_them() -> None:
    from fitstream.experiments.search.rules import counted, past_n_trials

    study = optuna.create_study()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()  # two workers at once, n_trials=3
    trials = study.get_trials(deepcopy=False)
    assert counted(trials, States.FAIL) == 4  # each worker saw one too many
    assert not past_n_trials(trials, first.number, 3, States.FAIL)
    assert past_n_trials(trials, second.number, 3, States.FAIL)


def test_a_retry_takes_its_originals_place_in_the_count() -> None:
    from fitstream.experiments.search.rules import past_n_trials

    study = optuna.create_study()
    dead = study.ask()
    dead.suggest_float("lr", 1e-3, 1e-1, log=True)
    study.tell(study.ask(), 1.0)
    fresh = study.ask()  # asked just before the dead worker's trial is retried
    study.tell(dead, state=States.FAIL)
    default_callback(optuna)(study, study.get_trials(deepcopy=False)[dead.number])
    retry = study.ask()
    trials = study.get_trials(deepcopy=False)
    assert trials[retry.number].system_attrs["failed_trial"] == dead.number
    assert retry.number > fresh.number
    # n_trials=2: the retry, in the dead trial's place, is trained; the fresh trial is one too many
    assert not past_n_trials(trials, retry.number, 2, States.FAIL)
    assert past_n_trials(trials, fresh.number, 2, States.FAIL)
