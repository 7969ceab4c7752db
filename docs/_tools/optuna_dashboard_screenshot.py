"""Make the search how-to's dashboard picture (docs/_static/optuna_dashboard.png).

Run it by hand after a change to what ``search`` tells the study; it needs
``chromium`` on the PATH and the ``optuna-dashboard`` package, which
``make doc`` and CI do not:

    uv run --with optuna-dashboard \
        python docs/_tools/optuna_dashboard_screenshot.py

It runs a real search (24 trials of a small MLP, 8 slots, a median pruner)
into an SQLite study, serves that storage with optuna-dashboard on 127.0.0.1
and photographs the study's page with headless Chromium.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from fitstream import augment, search, validation_loss
from tensorboard_screenshot import CHROMIUM, free_port, wait_for
from torch import nn

STATIC = Path(__file__).resolve().parents[1] / "_static"


def run_search(url: str) -> None:
    """The how-to's search, into the study at ``url``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(0)
    X = torch.randn(2000, 8)
    y = X[:, :1] - 2 * X[:, 1:2] + 0.1 * torch.randn(2000, 1)
    train, val = (X[:1600], y[:1600]), (X[1600:], y[1600:])

    def build(trial: optuna.Trial) -> tuple[nn.Module, torch.optim.Optimizer]:
        width = trial.suggest_categorical("width", [8, 32])
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        model = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 1))
        return model, torch.optim.Adam(model.parameters(), lr=lr)

    study = optuna.create_study(
        storage=url,
        study_name="mlp",
        sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=2),
    )
    stages = [augment(validation_loss(val, nn.MSELoss()))]
    search(study, build, train, nn.MSELoss(), key="val_loss", epochs=10,
           n_trials=24, slots=8, batch_size=64, stages=stages)  # fmt: skip


def main() -> None:
    here = Path(sys.executable).with_name("optuna-dashboard")
    dashboard = shutil.which("optuna-dashboard") or str(here)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'search.db'}"
        run_search(url)
        port = free_port()
        server = subprocess.Popen(
            [dashboard, url, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/api/studies")
            time.sleep(2)
            out = STATIC / "optuna_dashboard.png"
            shot = [*CHROMIUM, f"--screenshot={out}", f"{base}/dashboard/studies/1"]
            subprocess.run(shot, check=True, capture_output=True, timeout=120)
            print("wrote", out.relative_to(STATIC.parents[1]))
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
