"""One worker of a search shared through an Optuna storage (run by tests/test_search_workers.py).

Usage: ``python tests/search_worker.py STORAGE STUDY N_TRIALS SEED [PAUSE [HEARTBEAT [DIE]]]``:
``STORAGE`` is an RDB URL (``sqlite:///...``, ``postgresql://...``), ``native:URL`` for an RDB
storage that keeps Optuna's own heartbeat, or ``journal:PATH`` for a journal file; ``PAUSE``
(seconds) slows each epoch, so that a test can kill or interrupt the worker mid-run;
``HEARTBEAT`` (seconds, an int) is the heartbeat interval, its grace period three times that;
``DIE`` (a trial number) makes the worker kill itself (SIGKILL) while it asks that trial, after
the trial exists and before the search holds it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def storage_of(url: str, heartbeat: int = 0) -> Any:
    """Optuna's storage for ``url`` (``journal:PATH`` a journal file, ``native:URL`` an RDB
    storage with Optuna's heartbeat every ``heartbeat`` seconds)."""
    import optuna

    if url.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(url.removeprefix("journal:"))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("native:"):
        if not heartbeat:
            return url.removeprefix("native:")
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        retry = retry or optuna.storages.RetryFailedTrialCallback
        return optuna.storages.RDBStorage(
            url.removeprefix("native:"),
            heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat,
            heartbeat_stale_trial_callback=retry(max_retry=3),
        )
    return url


def main(argv: list[str]) -> None:
    """Run the search against the shared study."""
    import warnings

    import optuna
    import torch
    from torch import nn

    from fitstream import augment, search, validation_loss

    warnings.simplefilter("ignore")  # Optuna's experimental heartbeat
    url, name, n_trials, seed = argv[0], argv[1], int(argv[2]), int(argv[3])
    pause = float(argv[4]) if len(argv) > 4 else 0.0
    heartbeat = int(argv[5]) if len(argv) > 5 else 0
    die = int(argv[6]) if len(argv) > 6 else -1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g)
    y = X @ torch.tensor([[1.0], [-1.0], [0.5]])

    def build(trial: Any) -> Any:
        width = trial.suggest_categorical("width", [4, 8])
        model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        return model, torch.optim.Adam(model.parameters(), lr=lr)

    def slow(event: dict[str, Any]) -> dict[str, Any]:
        time.sleep(pause)
        return {}

    class Sampler(optuna.samplers.TPESampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            if trial.number == die:  # inside the ask: the trial is RUNNING, not yet held
                os.kill(os.getpid(), signal.SIGKILL)
            super().before_trial(study, trial)

    storage = storage_of(url, heartbeat)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=Sampler(constant_liar=True, seed=seed)
    )
    native = url.startswith("native:") and heartbeat
    timing = {} if native or not heartbeat else {
        "heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
    }  # fmt: skip
    stages = [augment(validation_loss((X, y), nn.MSELoss())), augment(slow)]
    print("worker started", flush=True)
    search(study, build, (X, y), nn.MSELoss(), key="val_loss", epochs=3, n_trials=n_trials,
           slots=3, batch_size=16, stages=stages, **timing)  # fmt: skip
    print("worker done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
