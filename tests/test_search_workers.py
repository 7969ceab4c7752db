"""Many workers, one study: ``search`` run by several processes against one Optuna storage.

Each test starts the worker script (tests/search_worker.py) in subprocesses, with a timeout,
then counts the study's trials. On a journal file, an SQLite file (with Optuna's own RDB
heartbeat) and a real PostgreSQL server:

- three workers share a study and stop together at exactly ``n_trials``;
- one of three is killed (SIGKILL) mid-trial: its trials are failed as stale and trained
  again by the others, so the study still ends with exactly ``n_trials`` finished trials,
  none running, every retry linked to its original and no setting trained twice;
- Ctrl-C (SIGINT) at a random moment leaves no trial running, and the interrupt reaches the
  worker's top level.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)
States = optuna.trial.TrialState
WORKER = Path(__file__).with_name("search_worker.py")
ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 18
HEARTBEAT = 1  # seconds; the grace period is three times that

pytestmark = pytest.mark.slow


def _storage(url: str) -> Any:
    import warnings

    sys.path.insert(0, str(WORKER.parent))
    try:
        from search_worker import storage_of
    finally:
        sys.path.pop(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's heartbeat is experimental
        return storage_of(url, HEARTBEAT)


def _start(
    url: str, name: str, seed: int, pause: float = 0.0, die: int = -1
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-W", "ignore", str(WORKER), url, name, str(N_TRIALS), str(seed),
            str(pause), str(HEARTBEAT), str(die)]  # fmt: skip
    return subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


def _finish(worker: subprocess.Popen[str], timeout: float = 240) -> str:
    try:
        out, _ = worker.communicate(timeout=timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    return out


def _wait_for_reports(study: Any, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        assert time.monotonic() < deadline, "the worker never reported"
        assert worker.poll() is None, _finish(worker)
        time.sleep(0.1)


def _described(trials: list[Any]) -> str:
    """One line per trial: what a failed count needs to be understood."""
    return "\n".join(
        f"{t.number} {t.state.name} steps={sorted(t.intermediate_values)} "
        f"system={ {k: v for k, v in t.system_attrs.items() if 'heartbeat' not in k} } "
        f"user={t.user_attrs}"
        for t in trials
    )


def _check_study(study: Any) -> list[Any]:
    """Exactly n_trials finished, none running or waiting; every retry linked; none twice."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (States.COMPLETE, States.PRUNED)]
    assert len(finished) == N_TRIALS, _described(trials)
    assert not [t for t in trials if t.state in (States.RUNNING, States.WAITING)]
    numbers = {t.number: t for t in trials}
    retried = set()
    for trial in trials:
        if "failed_trial" in trial.system_attrs:  # a retry: of a failed original, same setting
            original = numbers[trial.system_attrs["failed_trial"]]
            assert original.state == States.FAIL
            # the same setting (a trial killed before it was given one is given one now)
            assert original.params.items() <= trial.params.items()
            retried.add(original.number)
    for trial in trials:
        if trial.state == States.FAIL and trial.user_attrs.get("fitstream") is None:
            assert trial.number in retried  # every failed trial was trained again
    settings = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(settings)) == len(settings)  # no setting trained twice to the end
    for trial in finished:  # each trained from its first epoch, each epoch reported once
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        if trial.state == States.COMPLETE:
            assert steps == [1, 2, 3]
            assert trial.value == min(trial.intermediate_values.values())
    return trials


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own: a temporary data folder, a free local port; stopped after.

    ``.ci/run`` installs the server (Debian's ``postgresql``) where it is missing; elsewhere,
    without it, the test is skipped and says why.
    """
    pytest.importorskip("psycopg2", reason="psycopg2 drives Optuna's PostgreSQL storage")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="fitstream-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        user = subprocess.run(["id", "postgres"], capture_output=True, check=False)
        if shutil.which("runuser") is None or user.returncode:
            pytest.skip("running as root with no 'postgres' user to start the server as")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = folder / "data", folder / "server.log", _free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True,
                       timeout=120)  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o",
                        options, "-w", "-t", "60", "start"], check=True, capture_output=True,
                       timeout=90)  # fmt: skip
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
            subprocess.run(stop, capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A journal file (the search's own heartbeat), SQLite with Optuna's RDB heartbeat, and
    PostgreSQL (a plain URL: the search's own heartbeat on an RDB storage)."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'search.log'}"
    if request.param == "sqlite":
        return f"native:sqlite:///{tmp_path / 'search.db'}"
    url: str = request.getfixturevalue("postgres")
    return url


def test_three_workers_share_one_study_and_stop_at_n_trials(storage_url: str) -> None:
    name = f"shared-{time.monotonic_ns()}"
    optuna.create_study(storage=_storage(storage_url), study_name=name)
    workers = [_start(storage_url, name, seed) for seed in range(3)]
    outputs = [_finish(worker) for worker in workers]
    for worker, out in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, out
        assert "worker done" in out
    trials = _check_study(optuna.load_study(study_name=name, storage=_storage(storage_url)))
    extra = [t for t in trials if t.state == States.FAIL]  # asked at once by two workers
    assert all("past n_trials" in t.user_attrs["fitstream"] for t in extra)


def test_a_killed_workers_trials_are_trained_again_by_the_others(storage_url: str) -> None:
    name = f"killed-{time.monotonic_ns()}"
    optuna.create_study(storage=_storage(storage_url), study_name=name)
    # the victim slow enough (3 s a trial) to be mid-trial when it is killed, however fast the
    # others finish the rest of the study
    victim = _start(storage_url, name, 0, pause=1.0)
    study = optuna.load_study(study_name=name, storage=_storage(storage_url))
    _wait_for_reports(study, victim)
    others = [_start(storage_url, name, seed, pause=0.05) for seed in (1, 2)]
    time.sleep(1.0)  # all three at work
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    # read after the kill, well within the grace period: the victim's trials are still RUNNING
    running = optuna.load_study(study_name=name, storage=_storage(storage_url)).get_trials(
        deepcopy=False, states=(States.RUNNING,)
    )
    held = {t.number for t in running}
    for worker in others:
        out = _finish(worker)
        assert worker.returncode == 0, out
    trials = _check_study(optuna.load_study(study_name=name, storage=_storage(storage_url)))
    failed = [t for t in trials if t.state == States.FAIL and "fitstream" not in t.user_attrs]
    assert failed  # the victim's trials: failed as stale, then trained again
    assert {t.number for t in failed} <= held


@pytest.mark.parametrize("storage_url", ["journal", "sqlite"], indirect=True)
def test_a_worker_killed_inside_its_ask_leaves_no_trial_unjudged(storage_url: str) -> None:
    # Killed after the trial exists and before its heartbeat starts (the sampler runs in
    # between): the trial carries its stamp from birth, so it is failed as stale and retried.
    # The stamps alone (journal; PostgreSQL takes the same path) and beside Optuna's own RDB
    # heartbeat (SQLite).
    name = f"killed-in-ask-{time.monotonic_ns()}"
    optuna.create_study(storage=_storage(storage_url), study_name=name)
    victim = _start(storage_url, name, 0, die=4)
    out = _finish(victim)
    assert victim.returncode == -signal.SIGKILL, out
    study = optuna.load_study(study_name=name, storage=_storage(storage_url))
    orphan = study.get_trials(deepcopy=False)[4]
    assert orphan.state == States.RUNNING
    assert not orphan.intermediate_values
    survivor = _start(storage_url, name, 1)
    out = _finish(survivor)
    assert survivor.returncode == 0, out
    trials = _check_study(optuna.load_study(study_name=name, storage=_storage(storage_url)))
    assert trials[4].state == States.FAIL
    assert 4 in [t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs]


def test_ctrl_c_at_a_random_moment_leaves_no_trial_running(storage_url: str) -> None:
    rng = random.Random(0)
    for attempt in range(3):
        name = f"interrupted-{attempt}-{time.monotonic_ns()}"
        optuna.create_study(storage=_storage(storage_url), study_name=name)
        worker = _start(storage_url, name, attempt, pause=0.15)
        study = optuna.load_study(study_name=name, storage=_storage(storage_url))
        _wait_for_reports(study, worker)
        time.sleep(rng.uniform(0.0, 1.2))
        worker.send_signal(signal.SIGINT)
        out = _finish(worker, timeout=60)
        assert worker.returncode != 0, out
        assert "KeyboardInterrupt" in out
        assert "StorageInternalError" not in out
        trials = study.get_trials(deepcopy=False)
        assert not [t for t in trials if t.state == States.RUNNING]
        for trial in trials:
            if trial.state == States.FAIL:
                assert "KeyboardInterrupt" in trial.user_attrs["fail_reason"]
