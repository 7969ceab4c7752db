"""``prune`` on ``fit_stream`` under torchrun DDP (2 CPU ranks, gloo): one decision for all.

Rank 0 reports to the trial and decides; the decision is broadcast, so both ranks raise
``optuna.TrialPruned`` at the same epoch: no hang, no rank crashing on a closed connection.
The script runs under torchrun in a subprocess with a timeout, never in pytest's own process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("lightning")
WORKER = Path(__file__).with_name("ddp_prune_worker.py")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_rank_is_pruned_at_the_epoch_rank_0_decided(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            str(WORKER)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            check=False, env=env)  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Connection closed" not in result.stderr
    lines = dict(re.findall(r"^rank (\d): (.*)$", out, re.M))
    assert set(lines) == {"0", "1"}, out
    assert lines["0"].startswith(
        "saw steps [1], pruned (prune: trial 0 pruned at step 2, where val_loss="
    )
    assert lines["0"].endswith("trial PRUNED")
    # fit_stream's training thread is gone on both ranks once the pruned stream is left
    left = sorted(re.findall(r"^rank (\d) threads left: (.*)$", out, re.M))
    assert left == [("0", "[]"), ("1", "[]")], out
    assert lines["1"].startswith(
        "saw steps [1], pruned (prune: trial pruned at step 2, where val_loss="
    )
