"""Code written for fitstream 0.4 runs unchanged: its call forms and defaults, beside ours."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from fitstream import BestModel, LivePlot, collect, collect_jsonl, collect_pd, ema, live_plot


def test_sinks_drop_the_model_key_whatever_it_holds() -> None:
    events = [{"step": 1, "model": object(), "loss": 0.5}]
    assert collect(events) == [{"step": 1, "loss": 0.5}]
    buffer = io.StringIO()
    collect_jsonl(events, buffer)
    assert json.loads(buffer.getvalue()) == {"step": 1, "loss": 0.5}
    pytest.importorskip("pandas")
    assert list(collect_pd(events).columns) == ["step", "loss"]


def test_include_may_keep_the_model_key() -> None:
    marker = object()
    assert collect([{"model": marker, "a": 1}], include=["model", "a"]) == [
        {"model": marker, "a": 1}
    ]


def test_best_model_takes_its_arguments_by_position() -> None:
    model = nn.Linear(1, 1)
    best = BestModel("val_acc", "max", "cpu")
    best({"step": 1, "model": model, "val_acc": 0.5})
    best({"step": 2, "model": model, "val_acc": 0.25})
    assert (best.direction, best.best_step) == ("max", 1)
    assert best.state_dict is not None
    assert best.state_dict["weight"].device == torch.device("cpu")


def test_ema_of_a_value_that_is_no_number_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be a number"):
        list(ema("loss", decay=0.5)([{"loss": "abc"}]))
    with pytest.raises(TypeError, match="must be a number"):
        list(ema("loss", decay=0.5)([{"loss": "abc"}]))


def test_the_0_4_module_path_of_iter_batches() -> None:
    from fitstream.batching import iter_batches

    batches = list(iter_batches(torch.arange(4), batch_size=2, shuffle=False))
    assert [b.tolist() for (b,) in batches] == [[0, 1], [2, 3]]


def test_live_plot_draws_into_a_given_ax_and_keeps_what_it_shows() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.add_subplot()
    (mine,) = ax.plot([0, 1], [5, 5], label="reference")
    events = [{"step": i, "loss": 1 / i} for i in range(1, 4)]
    with live_plot("loss", ax=ax, min_interval=0) as plot:
        assert plot.ax is ax
        assert plot.figure is figure
        list(plot(events))
    lines = ax.get_lines()
    assert mine in lines
    assert [line.get_label() for line in lines] == ["reference", "loss"]
    assert lines[1].get_ydata().tolist() == [1.0, 0.5, 1 / 3]


def test_live_plot_keys_as_one_tuple_and_refresh_as_in_0_4() -> None:
    pytest.importorskip("matplotlib")
    plot = LivePlot(("train_loss", "val_loss"), min_interval=3600)
    assert plot.keys == ("train_loss", "val_loss")
    stream = plot([{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": 0.5}])
    next(stream)
    next(stream)  # within min_interval: not drawn yet
    assert plot.ax.get_lines()[0].get_xdata().tolist() == [1.0]
    plot.refresh()
    assert plot.ax.get_lines()[0].get_xdata().tolist() == [1.0, 2.0]
    stream.close()
