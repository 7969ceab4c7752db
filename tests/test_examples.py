"""The scripts in examples/ run as a user runs them and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TESTS = ROOT / "tests"

# Run here, as subprocesses, with a few epochs: name -> regexes its output must match.
RUN_HERE: dict[str, tuple[str, ...]] = {
    "quickstart.py": (
        r"step=0*1 train_loss=\d+\.\d+ val_loss=\d+\.\d+",
        r"trained 3 epochs: val_loss \d+\.\d+ -> \d+\.\d+",
    ),
    "validation_early_stopping.py": (
        r"val_acc=",
        r"trained [1-3] epochs",
        r"best epoch \d+: val_loss=\d+\.\d+",
        r"test accuracy of the best model: 0\.\d{3}|test accuracy of the best model: 1\.000",
    ),
    "compare_settings.py": (
        r"8 settings x 5 folds, 3 epochs; best first:",
        r"width +lr +n +best_step +mean +sem +diff +diff_sem +best_at_end",
        r"winner: width=\d+, lr=\S+, val_acc 0\.\d+ ± 0\.\d+ at epoch \d",
        r"plot: compare_settings.png",
        r"the winner refit on all 1500 training rows: test accuracy 0\.\d{3}",
    ),
    "tensorboard_logging.py": (
        r"lr=0\.01: wrote 3 epochs to runs/digits/\S+",
        r"lr=0\.1: wrote 3 epochs to runs/digits/\S+",
        r"tensorboard --logdir runs/digits",
    ),
}

# Files an example promises to write, relative to its working directory.
WRITES: dict[str, str] = {
    "tensorboard_logging.py": "runs/digits/*/events.out.tfevents.*",
    "compare_settings.py": "compare_settings.png",
}

# Exercised by the Lightning adapter's own tests (DDP needs torchrun in a subprocess).
RUN_BY_LIGHTNING_TESTS = ("lightning_fit_stream.py", "lightning_callback.py", "lightning_ddp.py")

EPOCHS = "3"
TIMEOUT_S = 240  # generous: importing torch on a loaded 2-core CI machine takes a while


def _run(script: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    # One intra-op thread: tiny models run fastest so, and threads do not fight on busy CI.
    env = {
        **os.environ,
        "FITSTREAM_EXAMPLE_EPOCHS": EPOCHS,
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(RUN_HERE))
def test_example_runs_and_prints_what_it_promises(name: str, tmp_path: Path) -> None:
    script = EXAMPLES / name
    if not script.exists():
        pytest.fail(f"examples/{name} is missing")
    result = _run(script, tmp_path)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), f"{name} printed nothing"
    for pattern in RUN_HERE[name]:
        assert re.search(pattern, result.stdout), f"{name}: no {pattern!r} in:\n{result.stdout}"
    if name in WRITES:
        written = sorted(tmp_path.glob(WRITES[name]))
        assert written, f"{name} wrote no {WRITES[name]}"
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("step=")]
    assert len(epoch_lines) <= int(EPOCHS), f"{name} ran past FITSTREAM_EXAMPLE_EPOCHS"


def test_every_example_is_exercised_by_a_test() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts, "examples/ holds no script"
    not_covered = [s for s in scripts if s not in RUN_HERE and s not in RUN_BY_LIGHTNING_TESTS]
    assert not not_covered, f"examples without a test: {not_covered}"


@pytest.mark.parametrize("name", RUN_BY_LIGHTNING_TESTS)
def test_lightning_examples_are_run_by_the_lightning_tests(name: str) -> None:
    if not (EXAMPLES / name).exists():
        pytest.fail(f"examples/{name} is missing")
    mentions = [
        p.name
        for p in TESTS.rglob("test_*.py")
        if p.name != Path(__file__).name and name in p.read_text(encoding="utf-8")
    ]
    assert mentions, f"no test under tests/ runs examples/{name}"


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for script in EXAMPLES.glob("*.py"):
        assert f"examples/{script.name}" in readme, (
            f"examples/README.md does not list {script.name}"
        )


def test_examples_read_the_epoch_variable() -> None:
    for script in EXAMPLES.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        assert "FITSTREAM_EXAMPLE_EPOCHS" in text, f"{script.name} ignores FITSTREAM_EXAMPLE_EPOCHS"


@pytest.mark.slow
def test_the_grid_example_splits_its_grid_between_two_workers(tmp_path: Path) -> None:
    """The same script twice on one journal file: each trains part, both print the whole table."""
    optuna = pytest.importorskip("optuna")
    script = EXAMPLES / "compare_settings.py"
    journal = tmp_path / "runs" / "grid.log"
    env = {**os.environ, "FITSTREAM_EXAMPLE_EPOCHS": "2", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), "--journal", str(journal), "--plot", f"plot{i}.png"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=TIMEOUT_S)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, err[-3000:]
        outputs.append(out)
    for out in outputs:  # each prints the table of all 8 settings
        table = out.split("best first:")[1].split("winner:")[0].strip().splitlines()
        assert len(table) == 1 + 8, out
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="compare-settings", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 8  # none twice
