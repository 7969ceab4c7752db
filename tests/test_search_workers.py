"""Many workers, one study: ``search`` run by several processes against one Optuna storage.

Each test starts the same worker script (tests/search_worker.py) in 3 processes, with a
timeout, and then counts the study's trials: exactly ``n_trials`` trained, each once, none left
running; a worker killed with SIGKILL leaves its trials RUNNING, and the others finish.
"""

from __future__ import annotations

import os
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

pytestmark = pytest.mark.slow


def _storage(url: str) -> Any:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from search_worker import storage_of
    finally:
        sys.path.pop(0)
    return storage_of(url)


def _start(url: str, name: str, seed: int, pause: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(WORKER), url, name, str(N_TRIALS), str(seed), str(pause)]
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


def _check_study(study: Any) -> None:
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if t.number < N_TRIALS]
    assert sorted(t.number for t in trained) == list(range(N_TRIALS))  # none lost
    assert {t.state for t in trained} <= {States.COMPLETE, States.PRUNED}
    for trial in trained:  # each trained once: its steps from 1, reported once each
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        if trial.state == States.COMPLETE:
            assert steps == [1, 2, 3]
            assert trial.value == min(trial.intermediate_values.values())
    extra = [t for t in trials if t.number >= N_TRIALS]  # asked at once by two workers
    assert all(
        t.state == States.FAIL and "past n_trials" in t.user_attrs["fitstream"] for t in extra
    )
    assert not [t for t in trials if t.state == States.RUNNING]


@pytest.fixture(params=["journal", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path / 'search.log'}"
    return f"sqlite:///{tmp_path / 'search.db'}"


def test_three_workers_share_one_study_and_stop_at_n_trials(storage_url: str) -> None:
    name = "shared"
    optuna.create_study(storage=_storage(storage_url), study_name=name)
    workers = [_start(storage_url, name, seed) for seed in range(3)]
    outputs = [_finish(worker) for worker in workers]
    for worker, out in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, out
        assert "worker done" in out
    _check_study(optuna.load_study(study_name=name, storage=_storage(storage_url)))


def test_a_killed_worker_leaves_its_trials_running_and_the_others_finish(
    storage_url: str,
) -> None:
    name = "killed"
    optuna.create_study(storage=_storage(storage_url), study_name=name)
    victim = _start(storage_url, name, 0, pause=0.2)
    study = optuna.load_study(study_name=name, storage=_storage(storage_url))
    deadline = time.monotonic() + 120
    while not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        assert time.monotonic() < deadline, "the worker never reported"
        assert victim.poll() is None, _finish(victim)
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    others = [_start(storage_url, name, seed) for seed in (1, 2)]
    for worker in others:
        out = _finish(worker)
        assert worker.returncode == 0, out
    trials = optuna.load_study(study_name=name, storage=_storage(storage_url)).get_trials()
    assert len({t.number for t in trials}) == len(trials)
    running = [t for t in trials if t.state == States.RUNNING]
    assert running  # the killed worker's: left RUNNING (a heartbeat would fail them)
    finished = [t for t in trials if t.state in (States.COMPLETE, States.PRUNED)]
    assert len(finished) + len(running) + sum(t.state == States.FAIL for t in trials) == len(trials)
    assert len([t for t in trials if t.number < N_TRIALS]) == N_TRIALS


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


def test_three_workers_share_one_study_on_a_postgresql_server(postgres: str) -> None:
    name = "on-postgres"
    optuna.create_study(storage=postgres, study_name=name)
    workers = [_start(postgres, name, seed) for seed in range(3)]
    for worker in workers:
        out = _finish(worker)
        assert worker.returncode == 0, out
    _check_study(optuna.load_study(study_name=name, storage=postgres))
