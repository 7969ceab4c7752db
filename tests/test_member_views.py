"""What a person sees of a real ``ensemble_stream``: TensorBoard runs, a figure, a progress bar.

The sink and stage tests use the suite's stand-in ensemble; these run the real source end to end.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from fitstream import (
    augment,
    collect,
    ensemble_stream,
    log_tensorboard,
    pipe,
    plot_history,
    progress,
    take,
    validation_loss,
)

LRS = [0.3, 0.03, 0.003]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def read_run(path: Path) -> EventAccumulator:
    run = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    run.Reload()
    return run


@pytest.fixture
def history(tmp_path: Path) -> dict[str, Any]:
    X, y = torch.randn(64, 3), torch.randn(64, 1)
    X_val, y_val = torch.randn(32, 3), torch.randn(32, 1)
    models = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)) for _ in LRS]
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, LRS, strict=True)]
    bar = Terminal()
    events = pipe(
        ensemble_stream((X, y), models, optimizers, nn.MSELoss(), batch_size=16),
        augment(validation_loss((X_val, y_val), nn.MSELoss())),
        take(4),
        progress("val_loss", file=bar),
        log_tensorboard(tmp_path / "sweep", hparams={"batch_size": 16}),
    )
    return {"events": collect(events), "bar": bar.getvalue(), "folder": tmp_path / "sweep"}


def test_tensorboard_has_a_run_and_a_session_per_member(history: dict[str, Any]) -> None:
    folder, events = history["folder"], history["events"]
    for member, lr in enumerate(LRS):
        run = folder / f"lr={lr:g}"  # the setting that tells the members apart
        curve = read_run(run / "validation").Scalars("epoch/loss")
        assert [point.step for point in curve] == [1, 2, 3, 4]
        values = [ev["val_loss"][member] for ev in events]
        assert [point.value for point in curve] == pytest.approx(values, rel=1e-6)
        best = read_run(run / "validation").Scalars("hparams/loss_best")[-1].value
        assert best == pytest.approx(min(values), rel=1e-6)
        content = read_run(run).PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["lr"].number_value == pytest.approx(lr)
        assert "optimizer" not in hparams  # SGD for all: not a column of the sweep
        assert "momentum" not in hparams
        assert hparams["member"].string_value == str(member)  # whole numbers shown as such
        assert hparams["batch_size"].string_value == "16"


def test_the_figure_has_a_curve_per_member_and_the_bar_the_best(history: dict[str, Any]) -> None:
    events = history["events"]
    fig = plot_history(events, ["val_loss"])
    assert len(fig.axes[0].get_lines()) == len(LRS)
    last = events[-1]["val_loss"]
    best = min(range(len(LRS)), key=last.__getitem__)
    final = history["bar"].split("\r")[-1]
    assert "| 4/4 epochs [" in final
    # the best member's value; its name too where 80 columns leave room for it
    assert f"val_loss={last[best]:.4g}" in final
    assert f"(best: lr={LRS[best]:g})" in final or "(best" not in final
