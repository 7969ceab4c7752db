"""Members named and grouped by their settings: banded plots, names in sinks, records' hparams."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fitstream import collect, ensemble_stream, plot_history, take

pytest.importorskip("matplotlib")


def _history() -> list[dict[str, Any]]:
    hparams = [{"lr": 0.1, "fold": f} for f in range(3)]
    hparams += [{"lr": 0.01, "fold": f} for f in (0, 1)]
    return [
        {"step": 1, "val_loss": [1.0, 2.0, 3.0, 4.0, 6.0], "hparams": hparams,
         "active": [True] * 5, "train_loss": [1.0] * 5},
        {"step": 2, "val_loss": [0.5, 1.0, 1.5, 2.0, 4.0],
         "active": [True, False, True, True, True],
         "train_loss": [0.5] * 5},
        {"step": 3, "val_loss": [0.4, 9.0, 0.4, 1.0, 3.0], "train_loss": [0.2] * 5},
    ]  # fmt: skip


def test_group_by_draws_the_mean_curve_and_a_one_std_band_per_group() -> None:
    fig = plot_history(_history(), "val_loss", group_by="lr")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "val_loss lr=0.1 (n=3)",
        "val_loss lr=0.01 (n=2)",
    ]
    # lr=0.1: member 1 is frozen at step 2, its 1.0 carried to step 3
    assert list(lines[0].get_ydata()) == pytest.approx([2.0, 1.0, 0.6])
    assert list(lines[1].get_ydata()) == pytest.approx([5.0, 3.0, 2.0])
    bands = [c for c in ax.collections if c.get_label() != "_best_step"]
    assert len(bands) == 2
    marks = [c.get_offsets().tolist() for c in ax.collections if c.get_label() == "_best_step"]
    assert marks == [[[3.0, pytest.approx(0.6)]], [[3.0, 2.0]]]  # each setting's best epoch
    low_high = bands[1].get_paths()[0].vertices[:, 1]
    assert min(low_high) == pytest.approx(2.0 - 1.0)  # mean 2.0 at step 3, std 1.0 (ddof=0)
    assert max(low_high) == pytest.approx(5.0 + 1.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["val_loss lr=0.1 (n=3)", "val_loss lr=0.01 (n=2)"]


def test_group_by_several_keys_and_names_panels() -> None:
    fig = plot_history(_history(), group_by=["lr"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss"]
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["val_loss lr=0.1 (n=3)", "val_loss lr=0.01 (n=2)",
                      "train_loss lr=0.1 (n=3)", "train_loss lr=0.01 (n=2)"]  # fmt: skip
    styles = [line.get_linestyle() for line in fig.axes[0].get_lines()]
    assert styles[0] != styles[2]


@pytest.mark.parametrize(
    ("group_by", "error", "match"),
    [
        ("width", KeyError, r"'group_by' names \['width'\].*the members have \['fold', 'lr'\]"),
        ([], TypeError, r"'group_by' must be a hyperparameter name or a non-empty list"),
        ([3], TypeError, r"group_by"),
    ],
)
def test_bad_group_by_is_refused(group_by: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        plot_history(_history(), "val_loss", group_by=group_by)


def test_group_by_needs_the_members_hparams() -> None:
    with pytest.raises(ValueError, match="no members' 'hparams'"):
        plot_history([{"step": 1, "val_loss": [1.0, 2.0]}], "val_loss", group_by="lr")


def test_records_of_an_ensemble_keep_its_members_hparams_and_activity() -> None:
    X, y = torch.randn(20, 2), torch.randn(20, 1)
    models = [nn.Linear(2, 1) for _ in range(2)]
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, (0.1, 0.2), strict=True)
    ]
    events = ensemble_stream((X, y), models, optimizers, nn.MSELoss(), batch_size=5,
                             hparams=[{"seed": 0}, {"seed": 1}])  # fmt: skip
    first, _ = collect(take(events, 2))
    own = {"optimizer": "SGD", "lr": 0.2, "weight_decay": 0, "momentum": 0, "dampening": 0}
    assert first["hparams"][1] == {**own, "nesterov": False, "seed": 1}
    assert first["active"] == [True, True]
    events = ensemble_stream((X, y), models, optimizers, nn.MSELoss(), batch_size=5)
    event = next(events)
    event["model"].freeze(0)
    (record,) = collect([event])
    assert record["active"] == [True, True]  # the event's: both trained in its epoch
    (later,) = collect([next(events)])
    assert later["active"] == [False, True]
    assert collect([event], include=["step"]) == [{"step": 1}]
