"""Tests of plot_history (figures from a finished run's history)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from fitstream import plot_history

NAN = math.nan

HISTORY: list[dict[str, Any]] = [
    {"step": 1, "train_loss": 0.9, "val_loss": 1.0, "model": object()},
    {"step": 2, "train_loss": torch.tensor(0.5), "val_loss": None},
    {"step": 3, "train_loss": np.float32(0.25), "val_loss": NAN},
    {"step": 4, "train_loss": math.inf, "val_loss": 0.75},
    {"step": 5, "train_loss": 0.125, "val_loss": "n/a"},
    {"step": 6, "train_loss": -math.inf},
]
TRAIN_Y = [0.9, 0.5, 0.25, NAN, 0.125, NAN]
VAL_Y = [1.0, NAN, NAN, 0.75, NAN, NAN]
STEPS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def plotted(fig: Figure, ax_index: int = 0) -> dict[str, tuple[list[float], list[float]]]:
    """Label -> (x, y) of each line of one Axes, as plain lists (NaN kept)."""
    return {
        str(line.get_label()): (
            np.asarray(line.get_xdata(), dtype=float).tolist(),
            np.asarray(line.get_ydata(), dtype=float).tolist(),
        )
        for line in fig.axes[ax_index].get_lines()
    }


def assert_same(actual: list[float], expected: list[float]) -> None:
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def test_plots_each_key_against_step_with_gaps() -> None:
    fig = plot_history(HISTORY, ["train_loss", "val_loss"])
    assert isinstance(fig, Figure)
    lines = plotted(fig)
    assert list(lines) == ["train_loss", "val_loss"]
    assert_same(lines["train_loss"][0], STEPS)
    assert_same(lines["train_loss"][1], TRAIN_Y)
    assert_same(lines["val_loss"][1], VAL_Y)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train_loss", "val_loss"]


def test_a_single_key_may_be_a_string_and_labels_the_y_axis() -> None:
    fig = plot_history(HISTORY, "train_loss", title="run 1")
    assert list(plotted(fig)) == ["train_loss"]
    assert fig.axes[0].get_ylabel() == "train_loss"
    assert fig.axes[0].get_title() == "run 1"


def test_isolated_points_get_markers_so_they_show() -> None:
    history = [
        {"step": 1, "train_loss": 0.9, "val_loss": 1.0},
        {"step": 2, "train_loss": 0.8},
        {"step": 3, "train_loss": 0.7, "val_loss": 0.75},
    ]
    fig = plot_history(history, ["train_loss", "val_loss"])
    markers = {line.get_label(): line.get_marker() for line in fig.axes[0].get_lines()}
    assert markers["val_loss"] == "."  # 1.0 and 0.75 have no finite neighbour
    assert markers["train_loss"] == "None"


def test_a_key_with_no_finite_value_is_marked_in_the_legend() -> None:
    fig = plot_history([{"step": 1, "loss": NAN}, {"step": 2, "loss": None}], "loss")
    lines = plotted(fig)
    assert list(lines) == ["loss (no values)"]
    assert_same(lines["loss (no values)"][1], [NAN, NAN])


def test_reads_a_jsonl_file_with_nan_infinity_and_null(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    rows = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": NAN},
        {"step": 3, "loss": math.inf},
        {"step": 4, "loss": None},
        {"step": 5, "loss": 0.5},
        {"step": 6},
    ]
    text = "\n".join(json.dumps(row) for row in rows) + "\n\n"
    assert "NaN" in text
    assert "Infinity" in text
    assert "null" in text
    path.write_text(text, encoding="utf-8")
    for history in (path, str(path)):
        lines = plotted(plot_history(history, "loss"))
        assert_same(lines["loss"][0], [1, 2, 3, 4, 5, 6])
        assert_same(lines["loss"][1], [1.0, NAN, NAN, NAN, 0.5, NAN])


def test_refuses_a_jsonl_line_that_is_not_an_event(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss":\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"plot_history: line 2 of .*bad\.jsonl.* not valid JSON"):
        plot_history(path, "loss")
    path.write_text('{"step": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 .* must be a JSON object .* got list"):
        plot_history(path, "loss")


def test_a_path_that_is_not_a_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"history .*nope\.jsonl.* not a file"):
        plot_history(tmp_path / "nope.jsonl", "loss")


def test_empty_jsonl_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"plot_history: the file .*empty\.jsonl.* is empty"):
        plot_history(path, "loss")


def test_reads_a_dataframe_with_gaps() -> None:
    frame = pd.DataFrame(
        {"step": [1, 2, 3], "train_loss": [0.5, NAN, 0.25], "val_loss": [NAN, 0.75, NAN]}
    )
    lines = plotted(plot_history(frame, ["train_loss", "val_loss"]))
    assert_same(lines["train_loss"][0], [1, 2, 3])
    assert_same(lines["train_loss"][1], [0.5, NAN, 0.25])
    assert_same(lines["val_loss"][1], [NAN, 0.75, NAN])


def test_reads_a_dataframe_indexed_by_step_with_pandas_missing_values() -> None:
    frame = pd.DataFrame(
        {"loss": pd.array([0.5, None, 0.25], dtype="Float64")},
        index=pd.Index([10, 20, 30], name="step"),
    )
    lines = plotted(plot_history(frame, "loss"))
    assert_same(lines["loss"][0], [10, 20, 30])
    assert_same(lines["loss"][1], [0.5, NAN, 0.25])


def test_an_ensembles_tidy_frame_plots_one_curve_per_member_and_no_hparams() -> None:
    from fitstream import collect_pd, ensemble_stream

    X, y = torch.randn(32, 3), torch.randn(32, 1)
    models = [torch.nn.Linear(3, 1) for _ in range(3)]
    opts = [
        torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        for m, lr in zip(models, [0.01, 0.02, 0.05], strict=True)
    ]
    events = ensemble_stream((X, y), models, opts, torch.nn.MSELoss(), batch_size=8)
    history = [next(events) for _ in range(4)]
    frame = collect_pd(history)
    assert {"member", "momentum", "dampening"} <= set(frame.columns)
    fig = plot_history(frame)
    assert [ax.get_ylabel() or ax.get_title() for ax in fig.axes] == ["train_loss"]
    lines = plotted(fig)
    assert sorted(lines) == ["train_loss lr=0.01", "train_loss lr=0.02", "train_loss lr=0.05"]
    for k, label in enumerate(sorted(lines)):
        assert_same(lines[label][0], [1, 2, 3, 4])
        assert_same(lines[label][1], [event["train_loss"][k] for event in history])
    one_step = plot_history(collect_pd(history[:1]), "train_loss")  # one step: still drawn
    assert len(plotted(one_step)) == 3


def test_does_not_need_pandas_for_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert list(plotted(plot_history(HISTORY, "train_loss"))) == ["train_loss"]


def test_accepts_a_generator_of_events() -> None:
    lines = plotted(plot_history((ev for ev in HISTORY), "train_loss"))
    assert_same(lines["train_loss"][1], TRAIN_Y)


def test_events_without_step_are_plotted_by_position() -> None:
    fig = plot_history([{"loss": 3.0}, {"loss": 2.0}], "loss")
    assert_same(plotted(fig)["loss"][0], [1.0, 2.0])
    assert fig.axes[0].get_xlabel() == "event"


def test_only_some_events_with_step_is_refused() -> None:
    with pytest.raises(ValueError, match=r"only some events have a numeric 'step' \(event 1"):
        plot_history([{"step": 1, "loss": 3.0}, {"loss": 2.0}], "loss")


def test_save_writes_a_png_of_the_requested_size(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "curves.png"
    fig = plot_history(HISTORY, ["train_loss", "val_loss"], save=target, figsize=(3, 2), dpi=50)
    assert target.is_file()
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(target)
    assert image.shape[:2] == (100, 150)  # (height, width) = figsize * dpi
    assert len(plotted(fig)) == 2


def test_default_png_size_is_640_by_400(tmp_path: Path) -> None:
    target = tmp_path / "default.png"
    plot_history(HISTORY, "train_loss", save=str(target))
    assert matplotlib.image.imread(target).shape[:2] == (400, 640)


def test_save_follows_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "curves.svg"
    plot_history(HISTORY, "train_loss", save=target)
    assert target.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_draws_into_a_given_axes(tmp_path: Path) -> None:
    fig = Figure(figsize=(4, 2), dpi=50)
    left, right = fig.subplots(1, 2)
    target = tmp_path / "panel.png"
    result = plot_history(HISTORY, "val_loss", ax=right, save=target)
    assert result is fig
    assert left.get_lines() == []
    assert_same(plotted(fig, 1)["val_loss"][1], VAL_Y)
    assert matplotlib.image.imread(target).shape[:2] == (100, 200)  # the figure's own dpi
    plot_history(HISTORY, "val_loss", ax=left, save=target, dpi=25)
    assert matplotlib.image.imread(target).shape[:2] == (50, 100)


def test_axes_of_a_subfigure_give_the_whole_figure() -> None:
    fig = Figure()
    ax = fig.subfigures(1, 2)[0].add_subplot()
    assert plot_history(HISTORY, "train_loss", ax=ax) is fig


def test_uses_no_pyplot_figures() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_history(HISTORY, "train_loss")
    assert plt.get_fignums() == before


def test_a_key_absent_from_every_event_lists_the_keys() -> None:
    with pytest.raises(KeyError, match=r"no event has the key\(s\) \['val_acc'\]; .*'train_loss'"):
        plot_history(HISTORY, ["train_loss", "val_acc"])


def test_empty_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"plot_history: history is empty"):
        plot_history([], "loss")


@pytest.mark.parametrize(
    ("history", "keys", "kwargs", "error", "match"),
    [
        (3, "loss", {}, TypeError, r"history must be a list of event dicts.* got int: 3"),
        ({"step": 1}, "loss", {}, TypeError, r"history must be a list of event dicts.* got dict"),
        ([{"step": 1}, 5], "loss", {}, TypeError, r"must hold event dicts, got int at position 1"),
        (HISTORY, 3, {}, TypeError, r"keys must be a string or a sequence of strings, got int"),
        (HISTORY, ["train_loss", 2], {}, TypeError, r"keys must be strings .* at position 1"),
        (HISTORY, [], {}, ValueError, r"keys must name at least one event value"),
        (HISTORY, "loss", {"figsize": (4, -1)}, ValueError, r"figsize must be \(width, height\)"),
        (HISTORY, "loss", {"figsize": "big"}, ValueError, r"figsize must be .* got 'big'"),
        (HISTORY, "loss", {"dpi": 0}, ValueError, r"dpi must be a positive number, got 0"),
        (HISTORY, "loss", {"title": 5}, TypeError, r"title must be a string or None, got int"),
        (HISTORY, "loss", {"ylim": "auto"}, ValueError, r"'ylim' must be None .* got 'auto'"),
        (HISTORY, "loss", {"ylim": (1, 0)}, ValueError, r"'ylim' must .*low < high, got \(1, 0\)"),
        (HISTORY, "loss", {"ylim": (0, "1")}, ValueError, r"'ylim' must .* got \(0, '1'\)"),
        (HISTORY, "loss", {"ylim": (0, 1, 2)}, ValueError, r"'ylim' must .* got \(0, 1, 2\)"),
    ],
)
def test_refuses_bad_arguments(
    history: Any, keys: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        plot_history(history, keys, **kwargs)


def test_figsize_with_ax_is_refused() -> None:
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match=r"figsize applies to a new figure"):
        plot_history(HISTORY, "train_loss", ax=ax, figsize=(3, 2))


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"plot_history needs .*'matplotlib'.*fitstream\[plot\]"):
        plot_history(HISTORY, "train_loss")


def test_round_trip_through_the_sinks(tmp_path: Path) -> None:
    from fitstream import collect, collect_jsonl, collect_pd

    path = tmp_path / "run.jsonl"
    collect_jsonl(HISTORY, path, exclude=["model"])
    frame = collect_pd(HISTORY, exclude=["model"])
    for history in (collect(HISTORY, exclude=["model"]), path, frame):
        lines = plotted(plot_history(history, ["train_loss", "val_loss"]))
        assert_same(lines["train_loss"][0], STEPS)
        assert_same(lines["train_loss"][1], TRAIN_Y)
        assert_same(lines["val_loss"][1], VAL_Y)


def test_drawing_into_an_axes_adds_to_what_it_shows() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    ax.axhline(0.5, label="target")
    plot_history(HISTORY, "train_loss", ax=ax)
    plot_history(
        [{"step": 1, "train_loss": 0.7}, {"step": 2, "train_loss": 0.6}], "train_loss", ax=ax
    )
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["target", "train_loss", "train_loss"]
    assert_same(np.asarray(lines[1].get_ydata(), dtype=float).tolist(), TRAIN_Y)
    assert_same(np.asarray(lines[2].get_ydata(), dtype=float).tolist(), [0.7, 0.6])
    assert lines[1].get_color() != lines[2].get_color()


# --- with no keys: what a person sees first (issue 12) ---------------------------------------

RUN = [
    {
        "step": s,
        "model": object(),
        "train_loss": 1 / s,
        "val_loss": 2 / s,
        "train_acc": 0.5 + 0.1 * s,
        "val_acc": 0.4 + 0.1 * s,
        "train_time_sec": 0.3,
        "is_best": s == 2,
    }
    for s in (1, 2, 3)
]


def test_no_keys_plots_every_metric_with_losses_and_accuracies_in_their_own_panels() -> None:
    fig = plot_history(RUN)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "acc"]
    assert list(plotted(fig, 0)) == ["train_loss", "val_loss"]
    assert list(plotted(fig, 1)) == ["train_acc", "val_acc"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    np.testing.assert_allclose(plotted(fig, 1)["val_acc"][1], [0.5, 0.6, 0.7])
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "acc"]


def test_a_title_names_the_run_and_a_jsonl_file_gives_its_name(tmp_path: Path) -> None:
    # The figure's texts hold the suptitle (Figure.get_suptitle is matplotlib 3.8+).
    assert [t.get_text() for t in plot_history(RUN, title="lr=0.01").texts] == ["lr=0.01"]
    path = tmp_path / "lr_0.01.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2)))
    fig = plot_history(path)
    assert fig.axes[0].get_title() == "lr_0.01"
    assert fig.axes[0].get_xlabel() == "epoch"


def test_events_without_a_metric_are_refused_with_their_keys() -> None:
    with pytest.raises(
        KeyError, match=r"plot_history: the events hold no metric .*\['note', 'step'\]"
    ):
        plot_history([{"step": 1, "note": "text"}])


def test_a_few_members_get_a_colour_and_a_name_each(sweep: Any) -> None:
    fig = plot_history(sweep(3, 3))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 6
    assert len({line.get_color() for line in lines[:3]}) == 3
    assert [line.get_color() for line in lines[3:]] == [line.get_color() for line in lines[:3]]
    assert {line.get_linestyle() for line in lines[3:]} != {lines[0].get_linestyle()}
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["train_loss lr=0.1", "train_loss lr=0.01", "train_loss lr=0.001"]
    assert legend[3] == "val_loss lr=0.1"


def test_many_members_get_one_curve_each_in_one_colour(sweep: Any) -> None:
    fig = plot_history(sweep(15, 3))
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 30  # train_loss and val_loss, 15 members each
    assert [line.get_color() for line in lines[:15]] == [lines[0].get_color()] * 15
    assert lines[15].get_color() != lines[0].get_color()
    assert_same(list(lines[4].get_ydata()), [5 / s for s in (1, 2, 3)])
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train_loss (15 members)", "val_loss (15 members)"]


# --- what a reader sees: whole epochs, and the range where the curves settle ---------------


def _converging(epochs: int = 30) -> list[dict[str, Any]]:
    """A run whose first epoch is far off: accuracy 0.15 at epoch 1, then 0.9 to 0.97."""
    return [
        {
            "step": s,
            "val_acc": 0.15 if s == 1 else 0.97 - 0.07 / s,
            "val_loss": 2.3 if s == 1 else 0.1 + 0.1 / s,
        }
        for s in range(1, epochs + 1)
    ]


def test_epochs_are_ticked_at_whole_numbers_only() -> None:
    for epochs in (4, 7, 30):
        fig = plot_history(_converging(epochs), "val_acc")
        fig.canvas.draw()
        ticks = fig.axes[0].get_xticks()
        assert all(float(t).is_integer() for t in ticks), ticks


def test_the_y_range_shows_where_the_curves_settle_by_default() -> None:
    history = _converging()
    ax = plot_history(history, "val_acc").axes[0]
    low, high = ax.get_ylim()
    later = [e["val_acc"] for e in history[8:]]  # the first quarter of 30 epochs left out
    assert low <= min(later)
    assert high >= max(later)
    assert low > 0.8  # epoch 1's 0.15 does not squash the rest into a few pixels
    assert (high - low) < 0.2


def test_ylim_full_shows_every_point_and_a_pair_sets_the_range() -> None:
    history = _converging()
    low, _ = plot_history(history, "val_acc", ylim="full").axes[0].get_ylim()
    assert low < 0.15
    assert plot_history(history, "val_acc", ylim=(0.5, 1.0)).axes[0].get_ylim() == (0.5, 1.0)


def test_curves_that_never_jump_keep_their_whole_range() -> None:
    steady = [{"step": s, "val_loss": 1.0 - 0.03 * s} for s in range(1, 21)]
    ax = plot_history(steady, "val_loss").axes[0]
    low, high = ax.get_ylim()
    assert low < 1.0 - 0.03 * 20
    assert high > 1.0 - 0.03


def test_a_grouped_plot_settles_too_and_marks_each_settings_best_epoch() -> None:
    hparams = [{"lr": lr, "fold": f} for lr in (0.1, 0.01) for f in range(2)]
    history = [
        {"step": s, "hparams": hparams,
         "val_acc": [0.1 if s == 1 else 0.9 + 0.002 * min(s, 12 + 3 * k) for k in range(4)]}
        for s in range(1, 21)
    ]  # fmt: skip
    ax = plot_history(history, "val_acc", group_by="lr").axes[0]
    assert ax.get_ylim()[0] > 0.8
    marks = [c.get_offsets().tolist() for c in ax.collections if c.get_label() == "_best_step"]
    # lr=0.1 (members 0, 1) stops rising at epoch 15, lr=0.01 (members 2, 3) at epoch 21 > 20
    assert [point[0][0] for point in marks] == [15.0, 20.0]
