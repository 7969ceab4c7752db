"""The Lightning examples run as users run them; the DDP one checks the cross-rank stop.

The single-process examples run in pytest's process as ``__main__`` (a subprocess would spend
most of its time importing torch and Lightning again). The DDP example runs under torchrun in
a subprocess (never inside pytest's own process: the launcher would re-run the pytest
command), with a timeout so that a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import os
import re
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 240  # importing torch and Lightning on a loaded 2-core machine takes a while


def run_here(
    script: str,
    workdir: Path,
    epochs: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run ``examples/<script>`` as ``__main__`` in ``workdir``; return what it printed."""
    monkeypatch.setenv("FITSTREAM_EXAMPLE_EPOCHS", str(epochs))
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `python examples/<script>` would
    capsys.readouterr()
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return capsys.readouterr().out


def run(args: list[str], workdir: Path, epochs: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FITSTREAM_EXAMPLE_EPOCHS": str(epochs), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a hung run is killed with all its ranks
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{args} did not finish in {TIMEOUT_S} s:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{stderr[-3000:]}"
    return result


def assert_three_epochs_and_the_best(out: str) -> None:
    """What both single-process examples promise to print after 3 epochs."""
    assert len(re.findall(r"^step=\d+ train_loss=\d\.\d+ val_loss=\d\.\d+", out, re.M)) == 3
    assert "trained 3 epochs" in out
    assert re.search(r"best epoch \d: val_loss=\d\.\d{4}", out)


def test_lightning_fit_stream_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_here("lightning_fit_stream.py", tmp_path, 3, monkeypatch, capsys)
    assert_three_epochs_and_the_best(out)
    assert re.search(r"validation accuracy of the best model: [01]\.\d{3}", out)
    log = tmp_path / "runs" / "lightning_fit_stream.jsonl"
    assert len(log.read_text().splitlines()) == 3


def test_lightning_callback_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_here("lightning_callback.py", tmp_path, 3, monkeypatch, capsys)
    assert_three_epochs_and_the_best(out)


@pytest.mark.slow
def test_lightning_ddp_example_stops_every_rank_at_the_epoch_rank_0_chose(
    tmp_path: Path,
) -> None:
    """Rank 0 stops after 2 epochs; rank 1 has no stop of its own and would run 1000."""
    args = [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(EXAMPLES / "lightning_ddp.py"),
    ]
    result = run(args, tmp_path, epochs=2)
    out = result.stdout
    # the examples keep their output to what they are about: none of Lightning's banners
    assert not re.search(r"GPU available|litlogger|LeafSpec", result.stderr), result.stderr
    ranks = dict(
        re.findall(
            r"^rank (\d): stopped after epoch 2 \(trainer epoch 2\), train_loss=(\S+)$", out, re.M
        )
    )
    assert set(ranks) == {"0", "1"}, out
    assert ranks["0"] == ranks["1"]  # the fallback train_loss is reduced across ranks


@pytest.mark.slow
def test_lightning_ddp_example_under_plain_python_says_it_runs_one_process(
    tmp_path: Path,
) -> None:
    result = run([str(EXAMPLES / "lightning_ddp.py")], tmp_path, epochs=1)
    first = result.stdout.splitlines()[0]
    assert first.startswith("lightning_ddp.py: started without torchrun, so this runs ONE")
    assert "torchrun --nproc-per-node=2 examples/lightning_ddp.py" in first
    assert "rank 0: stopped after epoch 1" in result.stdout
