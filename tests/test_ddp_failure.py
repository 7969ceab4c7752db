"""One rank's consumer fails under torchrun DDP (2 CPU ranks, gloo): every rank ends clearly.

The failing rank ends with its own error; the other with ``OtherRankFailed`` at the same epoch
boundary, never with gloo's "Connection closed by peer" or a hang. The script runs under
torchrun in a subprocess with a timeout, never in pytest's own process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
WORKER = Path(__file__).with_name("ddp_failure_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            str(WORKER), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            check=False, env=env)  # fmt: skip
    lines = dict(re.findall(r"^rank (\d): (.*)$", result.stdout, re.M))
    return result, lines


@pytest.mark.slow
@pytest.mark.parametrize("where", ["consumer", "stage"])
def test_a_failure_on_one_rank_ends_every_rank_with_a_clear_error(
    tmp_path: Path, where: str
) -> None:
    result, lines = _run(tmp_path, *(["--stage"] if where == "stage" else []))
    assert "Connection closed" not in result.stderr, result.stderr[-3000:]
    assert set(lines) == {"0", "1"}, result.stdout + result.stderr[-3000:]
    assert lines["0"].endswith("ValueError: rank 0's consumer gave up"), lines
    assert "OtherRankFailed: " in lines["1"], lines
    assert "another rank's consumer or stages failed at this epoch" in lines["1"]
    assert "this rank (rank 1) stops too" in lines["1"]
    if where == "consumer":
        assert lines["0"].startswith("saw steps [1, 2]")
        assert lines["1"].startswith("saw steps [1, 2]")
