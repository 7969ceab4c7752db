"""The README's code runs exactly as written and produces what its text says."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _lines(pattern: str, text: str) -> list[Any]:
    return re.findall(pattern, text, flags=re.MULTILINE)


def test_readme_runs_as_written_and_produces_what_it_says(
    markdown_runner: Callable[[Path, Path], dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = markdown_runner(README, tmp_path)
    printed = capsys.readouterr().out

    # Quick start: five epochs, one line each.
    assert _lines(r"^step=(\d+), loss=\d+\.\d{4}$", printed) == ["1", "2", "3", "4", "5"]

    # Augmentation: each of the three pipelines printed its three epochs with the new keys.
    assert len(_lines(r"^step=\d+ model_param_norm=\d+\.\d{3}$", printed)) == 3
    assert len(_lines(r"^step=\d+, val_loss=\d+\.\d{4}$", printed)) == 3
    assert len(_lines(r"^step=\d+ val_loss=\d+\.\d{4} model_param_norm=\d+\.\d{3}$", printed)) == 3

    # Many models at once: three epochs, four losses each, every model learning.
    ensemble_lines = _lines(r"^(\d) \[(\d\.\d+), (\d\.\d+), (\d\.\d+), (\d\.\d+)\]$", printed)
    assert [line[0] for line in ensemble_lines] == ["1", "2", "3"]
    first, last = ensemble_lines[0][1:], ensemble_lines[-1][1:]
    assert all(float(b) < float(a) for a, b in zip(first, last, strict=True))

    # islice: exactly 100 epochs.
    assert namespace["last"]["step"] == 100
    assert _lines(r"^100$", printed) == ["100"]

    # early_stop: the run ends 10 epochs after the best val_loss (or at the 300-epoch cap).
    stopped = _lines(r"^(\d+) (\d+\.\d{1,4})$", printed)  # rounded to 4 decimals
    steps = [int(step) for step, _ in stopped]
    val_losses = [float(value) for _, value in stopped]
    assert steps == list(range(1, len(steps) + 1))
    best = val_losses.index(min(val_losses))
    assert best > 0  # a fresh model: val_loss falls before it rises
    assert len(steps) == 300 or len(steps) - 1 - best == 10

    # Progress, TensorBoard and plots: the curves of 20 epochs, the figure's loss panel.
    assert [ev["step"] for ev in namespace["run"]] == list(range(1, 21))
    assert (tmp_path / "runs/tb/quickstart/validation").is_dir()
    assert (tmp_path / "runs/history.png").is_file()
    assert [ax.get_xlabel() for ax in namespace["figure"].axes] == ["epoch"]

    # collect: 100 events of metrics, the model left out.
    history = namespace["history"]
    assert [ev["step"] for ev in history] == list(range(1, 101))
    assert all(set(ev) == {"step", "train_loss", "train_time_sec", "lr"} for ev in history)

    # collect_jsonl: the file and its folder were created, one line per epoch.
    path = tmp_path / "runs" / "my_experiment.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 101))
    assert all(set(row) == {"step", "train_loss", "train_time_sec", "lr"} for row in rows)
    assert all(isinstance(row["train_loss"], float) for row in rows)

    # Install from a clone, beside PyPI; the examples are pointed to.
    text = README.read_text(encoding="utf-8")
    assert "pip install ./adapters/lightning" in text
    assert "](examples/)" in text

    # Lightning: both epochs of the Trainer came through the stream.
    assert namespace["trainer"].current_epoch == 2
    assert namespace["event"]["step"] == 2
    assert _lines(r"^epoch (\d+): train_loss=\d+\.\d{4}$", printed) == ["1", "2"]
