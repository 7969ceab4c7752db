"""Make the TensorBoard screenshots of the docs (docs/_static/tensorboard_*.png).

Run it by hand after a change to what ``log_tensorboard`` writes; it needs
``chromium`` on the PATH, which ``make doc`` and CI do not:

    uv run python docs/_tools/tensorboard_screenshot.py

It logs a small learning-rate sweep as docs/howto/tensorboard.md does (two
runs with hyperparameters), starts a TensorBoard server on 127.0.0.1 and
photographs the Time Series, HParams and Custom Scalars tabs with headless
Chromium; then it runs docs/tutorial.md and photographs the Time Series tab of
its digits run, and docs/howto/ensembles.md and photographs the HParams tab of
its sweep (one session per member), and docs/howto/tensorboard.md and
photographs its grid (4 settings x 5 folds: one run per setting) in the Time
Series, Custom Scalars and HParams tabs.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from fitstream import (
    augment,
    collect_tensorboard,
    epoch_stream,
    evaluate,
    pipe,
    take,
    validation_loss,
)
from torch import nn

STATIC = Path(__file__).resolve().parents[1] / "_static"
CHROMIUM = [
    "chromium",
    "--headless=new",
    "--no-sandbox",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=40000",
]


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(1) == labels).float().mean()


def sweep(logdir: Path) -> None:
    torch.manual_seed(0)
    X, X_val = torch.randn(400, 4), torch.randn(100, 4)
    y, y_val = (X.sum(1) > 0).long(), (X_val.sum(1) > 0).long()
    for lr in (0.1, 0.01):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        events = pipe(
            epoch_stream((X, y), model, optimizer, loss_fn, batch_size=32),
            augment(validation_loss((X_val, y_val), loss_fn)),
            augment(evaluate((X_val, y_val), metrics={"val_acc": accuracy})),
            augment(evaluate((X, y), metrics={"train_acc": accuracy})),
            take(30),
        )
        hparams = {"lr": lr, "optimizer": "sgd"}
        collect_tensorboard(events, logdir / f"lr_{lr}", hparams=hparams)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str) -> None:
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"tensorboard did not answer at {url}")


def shoot(logdir: Path, shots: dict[str, str]) -> None:
    """Serve ``logdir`` and photograph each tab of ``shots`` into its file."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tensorboard.main"]
    command += ["--logdir", str(logdir)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"{base}/data/runs")
        time.sleep(3)  # let the server load the event files
        for tab, name in shots.items():
            out = STATIC / name
            url = f"{base}/?forceSVG=true#{tab}"  # SVG: WebGL is flaky headless
            shot = [*CHROMIUM, f"--screenshot={out}", url]
            subprocess.run(shot, check=True, capture_output=True, timeout=120)
            print("wrote", out.relative_to(STATIC.parents[1]))
    finally:
        server.terminate()
        server.wait(timeout=15)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "runs"
        sweep(logdir)
        tabs = ("timeseries", "hparams", "custom_scalars")
        shoot(logdir, {tab: f"tensorboard_{tab}.png" for tab in tabs})
    # The ensemble how-to's own code logs its sweep to runs/sweep.
    sys.path.insert(0, str(Path(__file__).parent))
    from outputs import outputs

    # The tutorial's own run of digits, as its reader sees it first.
    with tempfile.TemporaryDirectory() as tmp:
        outputs(STATIC.parent / "tutorial.md", Path(tmp))
        shot = {"timeseries": "tensorboard_tutorial.png"}
        shoot(Path(tmp) / "runs" / "tensorboard", shot)
    with tempfile.TemporaryDirectory() as tmp:
        outputs(STATIC.parent / "howto" / "ensembles.md", Path(tmp))
        names = {"hparams": "tensorboard_ensemble_hparams.png"}
        shoot(Path(tmp) / "runs" / "sweep", names)
    # The how-to's grid: 4 learning rates x 5 folds, one run per setting.
    with tempfile.TemporaryDirectory() as tmp:
        outputs(STATIC.parent / "howto" / "tensorboard.md", Path(tmp))
        tabs = ("timeseries", "custom_scalars", "hparams")
        pictures = {t: f"tensorboard_grid_{t}.png" for t in tabs}
        shoot(Path(tmp) / "runs" / "tb" / "grid", pictures)


if __name__ == "__main__":
    main()
