"""Tests of live_plot: redraw pacing, notebook display, files, clean-up on every exit path."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import numpy as np
import pytest

from fitstream import live_plot, pipe, take
from fitstream.sinks import live_plotting
from fitstream.sinks.plotting import LivePlot


class FakeClock:
    """A clock that the test moves; the stage reads it instead of the real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeNotebook:
    """Stands in for IPython.display inside a kernel; records what was shown and when."""

    def __init__(self, lp: LivePlot | None = None) -> None:
        self.lp = lp
        self.shown: list[tuple[str, int]] = []  # ("display" | "update", points on the plot)
        self.images: list[bytes] = []

    def points(self) -> int:
        if self.lp is None:
            return -1
        return len(self.lp.figure.axes[0].get_lines()[0].get_xdata())

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        notebook = self

        class Image:
            def __init__(self, data: bytes, format: str) -> None:
                assert format == "png"
                self.data = data

        class Handle:
            def update(self, image: Image) -> None:
                notebook.shown.append(("update", notebook.points()))
                notebook.images.append(image.data)

        def display(image: Image, display_id: bool) -> Handle:
            assert display_id is True
            notebook.shown.append(("display", notebook.points()))
            notebook.images.append(image.data)
            return Handle()

        shell = types.SimpleNamespace(kernel=object())
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
        ipython.version_info = (9, 0, 0)  # type: ignore[attr-defined]  # matplotlib reads it
        display_module = types.ModuleType("IPython.display")
        display_module.Image = Image  # type: ignore[attr-defined]
        display_module.display = display  # type: ignore[attr-defined]
        ipython.display = display_module  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "IPython", ipython)
        monkeypatch.setitem(sys.modules, "IPython.display", display_module)


def timed(clock: FakeClock, n: int, every: float, fail_at: int | None = None) -> Iterator[Any]:
    """Events 1..n arriving ``every`` seconds apart (event 1 at time 0)."""
    for step in range(1, n + 1):
        clock.now = (step - 1) * every
        if step == fail_at:
            raise RuntimeError(f"source failed at event {step}")
        yield {"step": step, "loss": 1.0 / step, "acc": 0.1 * step if step % 2 else None}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(live_plotting, "_clock", fake)
    return fake


def line_data(lp: LivePlot) -> dict[str, tuple[list[float], list[float]]]:
    return {
        str(line.get_label()): (
            np.asarray(line.get_xdata(), dtype=float).tolist(),
            np.asarray(line.get_ydata(), dtype=float).tolist(),
        )
        for line in lp.figure.axes[0].get_lines()
    }


def test_redraws_at_most_once_per_interval_plus_a_final_draw(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lp = live_plot("loss", "acc", min_interval=1.0)
    notebook = FakeNotebook(lp)
    notebook.install(monkeypatch)
    events = list(lp(timed(clock, 10, every=0.3)))
    assert [ev["step"] for ev in events] == list(range(1, 11))
    # Events arrive at 0, 0.3, ..., 2.7 s: drawn at once (t=0), at t=1.2 and t=2.4 (the first
    # events at least 1 s after the previous draw), and once more at the end for event 10.
    assert notebook.shown == [("display", 1), ("update", 5), ("update", 9), ("update", 10)]
    assert all(image.startswith(b"\x89PNG") for image in notebook.images)


def test_final_figure_holds_every_event_with_gaps(clock: FakeClock) -> None:
    lp = live_plot("loss", "acc", min_interval=5.0)
    list(lp(timed(clock, 6, every=0.5)))
    lines = line_data(lp)
    assert lines["loss"][0] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    np.testing.assert_allclose(lines["loss"][1], [1.0 / s for s in range(1, 7)])
    expected_acc = [0.1 * s if s % 2 else math.nan for s in range(1, 7)]
    np.testing.assert_array_equal(lines["acc"][1], expected_acc)


def test_zero_interval_draws_every_event_and_no_extra_final_draw(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lp = live_plot("loss", min_interval=0)
    notebook = FakeNotebook(lp)
    notebook.install(monkeypatch)
    list(lp(timed(clock, 4, every=0.0)))
    assert notebook.shown == [("display", 1), ("update", 2), ("update", 3), ("update", 4)]


def test_each_stream_gets_its_own_display_and_the_data_accumulates(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lp = live_plot("loss", min_interval=100)
    notebook = FakeNotebook(lp)
    notebook.install(monkeypatch)
    list(lp(timed(clock, 2, every=1.0)))
    list(lp([{"step": 3, "loss": 0.2}]))
    assert notebook.shown == [("display", 1), ("update", 2), ("display", 3)]
    assert line_data(lp)["loss"][0] == [1.0, 2.0, 3.0]


def test_outside_a_notebook_nothing_is_displayed(clock: FakeClock) -> None:
    assert live_plotting._notebook_display() is None  # no kernel in the test process
    lp = live_plot("loss")
    assert [ev["step"] for ev in lp(timed(clock, 3, every=1.0))] == [1, 2, 3]
    assert line_data(lp)["loss"][0] == [1.0, 2.0, 3.0]


def test_save_writes_the_file_at_each_redraw(clock: FakeClock, tmp_path: Path) -> None:
    target = tmp_path / "runs" / "live.png"
    lp = live_plot("loss", min_interval=10, save=target, figsize=(3, 2), dpi=50)
    assert target.parent.is_dir()  # made at the call, so a bad path fails before training
    stream = lp(timed(clock, 3, every=1.0))
    next(stream)
    assert target.is_file()  # the first event is drawn at once
    first = target.read_bytes()
    list(stream)
    assert target.read_bytes() != first  # the final draw rewrote it
    assert matplotlib.image.imread(target).shape[:2] == (100, 150)


def test_is_a_stage_for_pipe_and_pulls_no_extra_event(counting_source: Any) -> None:
    src = counting_source(100)
    stream = pipe(src, live_plot("val_loss"), take(3))
    assert src.pulled == 0
    assert [ev["step"] for ev in stream] == [1, 2, 3]
    assert src.pulled == 3
    assert src.closed


def test_stream_first_call_form(counting_source: Any) -> None:
    src = counting_source(5)
    stream = live_plot(src, "val_loss")
    assert src.pulled == 0
    assert [ev["step"] for ev in islice(stream, 2)] == [1, 2]
    assert src.pulled == 2


def test_context_manager_closes_the_stream_after_an_early_break(
    counting_source: Any, clock: FakeClock
) -> None:
    src = counting_source(100)
    with live_plot("val_loss", min_interval=60) as lp:
        stream = lp(src)
        for ev in stream:
            if ev["step"] == 4:
                break
        assert not src.closed  # the variable still holds the abandoned stream...
    assert src.closed  # ...until the with block closes it
    assert src.pulled == 4
    assert line_data(lp)["val_loss"][0] == [1.0, 2.0, 3.0, 4.0]  # final draw done


def test_source_error_draws_what_came_and_closes_the_source(
    counting_source: Any, clock: FakeClock
) -> None:
    src = counting_source(10, fail_at=4)
    lp = live_plot("val_loss", min_interval=60)
    with pytest.raises(RuntimeError, match="source failed at event 4"):
        list(lp(src))
    assert src.closed
    assert line_data(lp)["val_loss"][0] == [1.0, 2.0, 3.0]


def test_keyboard_interrupt_draws_what_came_and_closes_the_source(clock: FakeClock) -> None:
    closed = []

    def source() -> Iterator[dict[str, Any]]:
        try:
            yield {"step": 1, "loss": 1.0}
            yield {"step": 2, "loss": 0.5}
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    lp = live_plot("loss", min_interval=60)
    with pytest.raises(KeyboardInterrupt):
        list(lp(source()))
    assert closed == [True]
    assert line_data(lp)["loss"] == ([1.0, 2.0], [1.0, 0.5])


def test_missing_steps_and_unknown_keys_never_stop_training(clock: FakeClock) -> None:
    lp = live_plot("loss", "typo_loss")
    list(lp([{"step": 5, "loss": 1.0}, {"loss": 0.5}, {"loss": math.inf}]))
    lines = line_data(lp)
    assert lines["loss"][0] == [5.0, 6.0, 7.0]
    np.testing.assert_array_equal(lines["loss"][1], [1.0, 0.5, math.nan])
    assert "typo_loss (no values)" in lines


def test_uses_no_pyplot_figures(clock: FakeClock) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    list(live_plot([{"step": 1, "loss": 1.0}], "loss"))
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, r"live_plot: keys must name at least one event value"),
        (("loss", 3), {}, TypeError, r"live_plot: keys must be strings .* int at position 1"),
        (("loss",), {"min_interval": -1}, ValueError, r"min_interval must be .* >= 0, got -1"),
        (("loss",), {"min_interval": "1s"}, ValueError, r"min_interval must be .* got '1s'"),
        (("loss",), {"dpi": -5}, ValueError, r"live_plot: dpi must be a positive number"),
        (("loss",), {"title": 1}, TypeError, r"live_plot: title must be a string or None"),
    ],
)
def test_refuses_bad_arguments_at_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        live_plot(*args, **kwargs)


def test_refuses_a_non_stream() -> None:
    lp = live_plot("loss")
    with pytest.raises(
        TypeError, match=r"live_plot: 'events' must be an iterable of event dicts, got int"
    ):
        lp(3)  # type: ignore[arg-type]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"live_plot needs .*'matplotlib'.*fitstream\[plot\]"):
        live_plot("loss")


def test_an_ensemble_gets_one_curve_per_member(clock: Any, sweep: Any) -> None:
    lp = LivePlot("val_loss", min_interval=0.0)
    list(lp(sweep(4, 3)))
    ax = lp.figure.axes[0]
    assert ax.get_xlabel() == "epoch"
    assert len(ax.get_lines()) == 4
    assert_ys = [list(line.get_ydata()) for line in ax.get_lines()]
    assert assert_ys[3] == pytest.approx([8 / s for s in (1, 2, 3)])
