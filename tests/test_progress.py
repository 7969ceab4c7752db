"""Tests of the progress bar stage."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import sys
import termios
import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import pytest
import torch
import tqdm
from torch import nn

from fitstream import pipe, progress, take
from fitstream.stages._progress_values import member_text as _member_text


class Terminal(io.StringIO):
    """A text stream that claims to be a terminal, so tqdm draws with ``disable=None``."""

    def isatty(self) -> bool:
        return True


class WideTerminal(Terminal):
    """A terminal ``columns`` wide: its ``fileno`` is a pseudo-terminal of that size."""

    def __init__(self, columns: int) -> None:
        super().__init__()
        self.leader, self.follower = os.openpty()
        size = struct.pack("HHHH", 24, columns, 0, 0)
        fcntl.ioctl(self.follower, termios.TIOCSWINSZ, size)

    def fileno(self) -> int:
        return self.follower

    def close(self) -> None:
        os.close(self.leader)
        os.close(self.follower)
        super().close()


@pytest.fixture
def wide_terminal() -> Iterator[Callable[[int], WideTerminal]]:
    made: list[WideTerminal] = []

    def make(columns: int) -> WideTerminal:
        made.append(WideTerminal(columns))
        return made[-1]

    yield make
    for terminal in made:
        terminal.close()


def final_line(out: io.StringIO) -> str:
    """The last state the bar drew (tqdm redraws in place with carriage returns)."""
    text = out.getvalue()
    return text.rstrip("\n").split("\r")[-1]


@pytest.fixture
def closed_cleanly() -> Callable[[io.StringIO], bool]:
    """Tell whether the bar writing to ``out`` was closed.

    A closed bar (leave=True) ends its output with a newline, and tqdm no longer lists it
    among its open bars (bars other tests may have left open are not counted).
    """
    before = set(getattr(tqdm.tqdm, "_instances", ()))

    def check(out: io.StringIO) -> bool:
        opened = set(getattr(tqdm.tqdm, "_instances", ())) - before
        return out.getvalue().endswith("\n") and not opened

    return check


def test_passes_events_through_unchanged(counting_source: Any) -> None:
    src = counting_source(5)
    out = Terminal()
    events = list(pipe(src, progress("val_loss", file=out)))
    assert events == [{"step": i, "val_loss": 1.0 / i} for i in range(1, 6)]


def test_bar_shows_count_rate_total_and_latest_values() -> None:
    events = [
        {"step": 1, "train_loss": torch.tensor(0.5), "acc": np.float32(0.25)},
        {"step": 2, "train_loss": torch.tensor(0.123456), "acc": np.float32(0.75)},
        {"step": 3, "train_loss": 7, "acc": 0.875},
    ]
    out = Terminal()
    list(progress(events, "train_loss", "acc", total=3, file=out))
    line = final_line(out)
    assert "3/3" in line
    assert "s/epoch" in line  # time per epoch, one number format
    assert "train_loss=7" in line
    assert "acc=0.875" in line
    assert line.index("train_loss=") < line.index("acc=")


def test_values_are_compact_and_tensors_are_converted() -> None:
    events = [{"step": 1, "loss": torch.tensor(0.123456789)}]
    out = Terminal()
    list(progress(events, "loss", file=out))
    assert "loss=0.1235" in final_line(out)
    assert "tensor" not in out.getvalue()


def test_a_missing_key_keeps_its_last_value_or_is_left_out() -> None:
    events = [
        {"step": 1, "train_loss": 0.5},
        {"step": 2, "train_loss": 0.4, "val_loss": 0.9},
        {"step": 3, "train_loss": 0.3},
    ]
    out = Terminal()
    with pytest.warns(UserWarning, match="'never_there', which none of the 3 events had"):
        list(progress(events, "val_loss", "train_loss", "never_there", file=out))
    line = final_line(out)
    assert "val_loss=0.9" in line  # kept from step 2
    assert "train_loss=0.3" in line
    assert "never_there" not in out.getvalue()
    # Before val_loss first appears, the bar shows only train_loss.
    before = Terminal()
    with pytest.warns(UserWarning, match="'val_loss', which the one event had"):
        list(progress(events[:1], "val_loss", "train_loss", file=before))
    assert "train_loss=0.5" in final_line(before)
    assert "val_loss" not in before.getvalue()


def test_non_numeric_values_are_not_shown() -> None:
    events = [{"step": 1, "phase": "warmup", "weights": torch.ones(3)}]
    out = Terminal()
    assert list(progress(events, "phase", "weights", file=out)) == events
    assert "phase" not in out.getvalue()
    assert "weights" not in out.getvalue()


def test_writes_nothing_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    events = [{"step": i, "loss": 1.0} for i in range(1, 4)]
    assert list(progress(events, "loss", file=out)) == events
    assert out.getvalue() == ""


def test_disable_true_and_false_override_the_terminal_check() -> None:
    events = [{"step": 1, "loss": 1.0}]
    hidden = Terminal()
    list(progress(events, "loss", disable=True, file=hidden))
    assert hidden.getvalue() == ""
    shown = io.StringIO()
    list(progress(events, "loss", disable=False, file=shown))
    assert "loss=1" in shown.getvalue()


def test_desc_is_written_before_the_bar() -> None:
    out = Terminal()
    list(progress([{"step": 1}], desc="fold 2", file=out))
    assert final_line(out).startswith("fold 2")


def test_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress([{"step": 1}], disable=False)) == [{"step": 1}]
    captured = capsys.readouterr()
    assert "epoch" in captured.err
    assert captured.out == ""


def test_is_lazy_and_pulls_no_extra_event(counting_source: Any) -> None:
    src = counting_source(100)
    out = Terminal()
    stream = pipe(src, progress("val_loss", file=out))
    assert src.pulled == 0
    assert out.getvalue() == ""  # no bar before the first event is requested
    first = list(islice(stream, 3))
    assert [ev["step"] for ev in first] == [1, 2, 3]
    assert src.pulled == 3


def test_closes_bar_and_source_when_exhausted(
    counting_source: Any, closed_cleanly: Callable[[io.StringIO], bool]
) -> None:
    src = counting_source(3)
    out = Terminal()
    list(pipe(src, progress(file=out)))
    assert closed_cleanly(out)
    assert "3epoch" in final_line(out).replace(" ", "")


def test_closes_bar_and_source_when_consumer_stops_early(
    counting_source: Any, closed_cleanly: Callable[[io.StringIO], bool]
) -> None:
    src = counting_source(100)
    out = Terminal()
    stream = pipe(src, progress("val_loss", file=out))
    for ev in stream:
        if ev["step"] == 2:
            break
    assert not src.closed  # the for loop does not close the generator by itself...
    stream.close()  # type: ignore[attr-defined]
    assert src.closed
    assert closed_cleanly(out)
    assert src.pulled == 2


def test_closes_bar_and_source_under_take(
    counting_source: Any, closed_cleanly: Callable[[io.StringIO], bool]
) -> None:
    src = counting_source()
    out = Terminal()
    assert len(list(pipe(src, progress(file=out), take(4)))) == 4
    assert src.pulled == 4
    assert src.closed
    assert closed_cleanly(out)


def test_closes_bar_and_source_when_the_source_raises(
    counting_source: Any, closed_cleanly: Callable[[io.StringIO], bool]
) -> None:
    src = counting_source(10, fail_at=3)
    out = Terminal()
    with pytest.raises(RuntimeError, match="source failed at event 3"):
        list(pipe(src, progress(file=out)))
    assert src.closed
    assert closed_cleanly(out)
    assert "2epoch" in final_line(out).replace(" ", "")


def test_closes_bar_and_source_on_keyboard_interrupt(
    closed_cleanly: Callable[[io.StringIO], bool],
) -> None:
    closed = []

    def source() -> Iterator[dict[str, Any]]:
        try:
            yield {"step": 1}
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    out = Terminal()
    with pytest.raises(KeyboardInterrupt):
        list(progress(source(), file=out))
    assert closed == [True]
    assert closed_cleanly(out)


def test_closes_bar_when_an_error_is_thrown_in_at_the_yield(
    counting_source: Any, closed_cleanly: Callable[[io.StringIO], bool]
) -> None:
    src = counting_source(10)
    out = Terminal()
    stream = pipe(src, progress(file=out))
    next(stream)
    with pytest.raises(ValueError, match="consumer failed"):
        stream.throw(ValueError("consumer failed"))  # type: ignore[attr-defined]
    assert src.closed
    assert src.pulled == 1
    assert closed_cleanly(out)


def test_both_call_forms_give_the_same_stream() -> None:
    events = [{"step": i, "loss": float(i)} for i in range(1, 4)]
    out = io.StringIO()
    assert list(progress(events, "loss", file=out)) == list(
        pipe(events, progress("loss", file=out))
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"total": 0}, ValueError, r"progress: 'total' must be a positive int, got 0"),
        ({"total": 2.5}, TypeError, r"progress: 'total' must be a positive int, got float: 2\.5"),
        ({"total": True}, TypeError, r"progress: 'total' must be a positive int, got bool: True"),
        ({"disable": "yes"}, TypeError, r"progress: disable must be True, False or None"),
        ({"desc": 3}, TypeError, r"progress: desc must be a string or None, got int: 3"),
        ({"file": "out.txt"}, TypeError, r"progress: file must be a writable text stream"),
    ],
)
def test_refuses_bad_options_at_call(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        progress("loss", **kwargs)


def test_refuses_non_string_keys_at_call() -> None:
    with pytest.raises(TypeError, match=r"progress: keys must be strings .* got int at position 1"):
        progress("loss", 3)


def test_missing_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"progress needs .*'tqdm'.*fitstream\[progress\]"):
        progress("loss")
    with pytest.raises(ImportError, match=r"fitstream\[progress\]"):
        progress("loss", file=io.StringIO())


def test_without_file_the_bar_comes_from_tqdm_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm.auto

    made: list[dict[str, Any]] = []

    class Recording(tqdm.tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs)
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    assert list(progress([{"step": 1}, {"step": 2}], total=2)) == [{"step": 1}, {"step": 2}]
    assert len(made) == 1
    assert made[0]["unit"] == "epoch"
    assert made[0]["total"] == 2
    assert made[0]["disable"] is None


# --- what the bar says (issue 12) ------------------------------------------------------------


def test_the_count_reads_as_words() -> None:
    out = Terminal()
    list(progress([{"step": s} for s in range(1, 9)], file=out, total=None))
    assert "| 8/8 epochs [" in final_line(out)  # a list says how long it is
    out = Terminal()
    list(progress((ev for ev in [{"step": 1}]), file=out))
    assert final_line(out).startswith("1 epoch [")
    out = Terminal()
    list(progress(({"step": s} for s in range(1, 9)), file=out))
    assert final_line(out).startswith("8 epochs [")


def test_the_total_comes_from_an_upstream_take(counting_source: Any) -> None:
    out = Terminal()
    stream = pipe(counting_source(), take(100), progress("val_loss", file=out))
    assert [ev["step"] for ev in islice(stream, 3)] == [1, 2, 3]
    assert " 0/100 epochs [00:00<?" in out.getvalue()  # elapsed<remaining: a time estimate
    stream.close()  # type: ignore[attr-defined]
    assert final_line(out).startswith("|")
    assert "3/100 epochs (stopped early) [" in final_line(out)


def test_the_bar_says_when_the_stream_ended_before_its_total() -> None:
    from fitstream import early_stop

    events = [{"step": s, "val_loss": abs(s - 3) + 0.5} for s in range(1, 200)]
    out = Terminal()
    kept = list(pipe(events, take(100), early_stop(key="val_loss", patience=2), progress(file=out)))
    assert len(kept) == 5
    assert "5/100 epochs (ended early)" in final_line(out)


def test_a_text_bar_in_a_file_fits_80_columns() -> None:
    out = io.StringIO()
    events = [{"step": s, "train_loss": 1 / s, "val_loss": 2 / s, "val_acc": 0.5} for s in (1, 2)]
    keys = ("train_loss", "val_loss", "val_acc")
    list(pipe((ev for ev in events), take(100), progress(*keys, file=out, disable=False)))
    lines = [line for line in out.getvalue().replace("\r", "\n").split("\n") if line]
    assert lines
    assert all(len(line) <= 80 for line in lines[:-1])
    # the values need the room: the bar and the times went, every value stayed whole, also
    # once the note of the end (which makes this line 83 columns) came
    assert lines[-1].startswith("2/100 epochs (ended early) [")
    assert lines[-1].endswith("train_loss=0.5, val_loss=1, val_acc=0.5]")


def test_a_bar_with_room_keeps_its_bar_and_times() -> None:
    out = io.StringIO()
    events = [{"step": s, "val_loss": 2 / s} for s in (1, 2)]
    list(pipe((ev for ev in events), take(2), progress("val_loss", file=out, disable=False)))
    line = final_line(out)
    assert re.fullmatch(r"\|#+\| 2/2 epochs \[\d\d:\d\d<\d\d:\d\d, .*epoch, val_loss=1\]", line), (
        line
    )
    assert len(line) == 80  # tqdm fills the line with the bar


def test_an_ensemble_shows_its_best_member_and_how_many_still_train(
    sweep: Any,
) -> None:
    events = sweep(64, 2)
    ensemble = events[0]["model"]
    events[1]["val_acc"] = [0.5] * 63 + [0.9]
    ensemble.freeze(5)
    out = Terminal()
    list(progress(events, "val_loss", file=out))
    line = final_line(out)
    assert "val_loss=1 (best: lr=0.1)" in line  # losses: the smallest, named by its lr
    assert "[0." not in line  # never the list itself
    out = Terminal()
    list(progress(events, "val_acc", file=out))
    assert "val_acc=0.9 (best: lr=1e-64)" in final_line(out)  # otherwise: the largest
    out = Terminal()
    list(progress(events, file=out))
    assert final_line(out).endswith(", 63/64 training]")
    same = sweep(3, 1, hparams=[{"optimizer": "Adam", "lr": 0.1}] * 3)
    out = Terminal()
    list(progress(same, "val_loss", file=out))
    assert "val_loss=2 (best: member 0)" in final_line(out)  # nothing tells them apart


def test_no_thread_outlives_a_progress_bar_on_any_exit_path(counting_source: Any) -> None:
    # tqdm's monitor thread, started by a first bar and never stopped, is not started by ours.
    import threading

    before = {t.ident for t in threading.enumerate()}
    for round_ in range(40):
        disable = round_ % 2 == 0
        source = counting_source(
            n=3 if round_ % 4 < 2 else None, fail_at=2 if round_ % 4 == 3 else None
        )
        bar = progress("val_loss", file=Terminal(), disable=disable)
        if round_ % 4 == 3:
            with pytest.raises(RuntimeError):
                list(bar(source))
        elif round_ % 4 == 2:
            stream = bar(source)
            next(stream)
            stream.close()
        else:
            list(bar(source))
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == []


# --- a key no event has ------------------------------------------------------------------------


def _counting(n: int, **extra: Any) -> Iterator[dict[str, Any]]:
    for step in range(1, n + 1):
        yield {"step": step, "train_loss": 1 / step, **extra}


def test_a_misspelled_key_is_warned_about_once_after_ten_events_with_the_keys_there_are() -> None:
    pulled: list[int] = []
    events = (pulled.append(e["step"]) or e for e in _counting(30, val_loss=0.5))
    stream = progress(events, "val_los", "train_loss", file=Terminal())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for event in stream:
            if event["step"] == 9:
                assert caught == []  # not before the tenth event
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1  # once, not at every event nor again at the end
    assert "progress: keys names 'val_los', which none of the 10 events had" in messages[0]
    assert "'step', 'train_loss', 'val_loss'" in messages[0]
    assert pulled == list(range(1, 31))  # the warning pulls nothing extra


def test_a_key_seen_within_ten_events_or_a_hidden_bar_gives_no_warning() -> None:
    every_fifth = [
        {"step": s, "train_loss": 0.1, **({"val_loss": 0.2} if s % 5 == 0 else {})}
        for s in range(1, 21)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(progress(every_fifth, "val_loss", file=Terminal()))
        list(progress(_counting(20), "val_los", disable=True))
        list(progress([], "val_los", file=Terminal()))  # no event: nothing to tell


def test_a_stream_stopped_early_still_warns_about_a_key_it_never_had() -> None:
    stream = progress(_counting(100), "val_los", file=Terminal())
    for event in stream:
        if event["step"] == 4:
            break
    with pytest.warns(UserWarning, match="'val_los', which none of the 4 events had"):
        stream.close()


# --- the best member ---------------------------------------------------------------------------


class _Members:
    """An ensemble stand-in: what progress reads of one."""

    def __init__(self, active: list[bool]) -> None:
        self.active = tuple(active)
        self.hparams = [{"lr": lr} for lr in (0.1, 0.01, 0.001)][: len(active)]
        self.members = [nn.Linear(1, 1) for _ in active]

    def __len__(self) -> int:
        return len(self.active)

    def freeze(self, member: int) -> None:
        raise AssertionError("progress never freezes")


def test_the_best_member_shown_is_one_still_training_and_a_better_stopped_one_follows(
    wide_terminal: Callable[[int], WideTerminal],
) -> None:
    event = {"step": 1, "model": _Members([True, False, True]), "val_loss": [0.5, 0.2, 0.4]}
    out = wide_terminal(120)
    list(progress([event], "val_loss", file=out))
    line = final_line(out)
    assert line.endswith("val_loss=0.4 (best: lr=0.001; lr=0.01 stopped at 0.2), 2/3 training]")
    out = Terminal()  # 80 columns: the note is cut after an item, or left out; the value stays
    list(progress([event], "val_loss", file=out))
    line = final_line(out)
    assert len(line) <= 80
    assert re.search(r"val_loss=0\.4( \(best: lr=0\.001…\))?(, 2/3 training)?\]$", line), line
    text = _member_text("val_loss", [0.5, 0.2, 0.4], [True, False, True], ["a", "b", "c"])
    assert text == ("val_loss=0.4", "best: c; b stopped at 0.2")
    assert _member_text("val_acc", [0.5, 0.9], [True, False], ["a", "b"]) == (
        "val_acc=0.5",
        "best: a; b stopped at 0.9",
    )
    assert _member_text("val_acc", [0.5, 0.9], [False, False], ["a", "b"]) == (
        "val_acc=0.9",
        "best: b, stopped",
    )


def test_a_per_member_key_that_tells_no_direction_shows_its_range() -> None:
    event = {"step": 1, "model": _Members([True, True]), "lr": [0.1, 0.01]}
    out = Terminal()
    list(progress([event], "lr", file=out))
    assert "lr=0.01..0.1" in final_line(out)
    assert "best" not in final_line(out)


# --- a grid judged by cross-validation: the keys named, the best setting's mean -------------


class _Grid(_Members):
    """20 members: 4 learning rates x 5 folds, as a cross-validated grid's ensemble."""

    def __init__(self) -> None:
        super().__init__([True] * 20)
        self.hparams = [{"lr": lr, "fold": f} for lr in (0.1, 0.03, 0.01, 0.003) for f in range(5)]


def _grid_event(step: int) -> dict[str, Any]:
    # setting s (members 5s..5s+4): val_acc 0.9 + 0.01 s + 0.002 f, so lr=0.003 is best,
    # with mean 0.934; its fold 4 alone (0.938) is not what the bar shows
    acc = [0.9 + 0.01 * (k // 5) + 0.002 * (k % 5) for k in range(20)]
    return {
        "step": step,
        "model": _Grid(),
        "train_loss": [0.1 + 0.001 * k for k in range(20)],
        "train_acc": [1.0] * 20,
        "val_loss": [0.2 - 0.001 * k for k in range(20)],
        "val_acc": acc,
        "lr": [h["lr"] for h in _Grid().hparams],
    }


@pytest.mark.parametrize(
    "keys",
    [("val_loss", "val_acc"), ("train_loss", "train_acc", "val_acc", "lr")],
)
def test_every_named_key_shows_in_order_on_an_80_column_line(keys: tuple[str, ...]) -> None:
    out = Terminal()  # not a real terminal: 80 columns
    list(progress([_grid_event(s) for s in range(1, 31)], *keys, total=30, file=out))
    line = final_line(out)
    # 80 columns, the bar and the times given up first; a log's line grows past 80 only when
    # the values alone need more (four keys of a 20-member grid do)
    assert len(line) <= 80 or line.startswith("30/30 epochs ["), line
    positions = [line.find(f"{key}=") for key in keys]
    assert all(p >= 0 for p in positions), line
    assert positions == sorted(positions)  # in the order given
    assert line.rstrip().endswith("]")  # nothing cut off


def test_a_grid_shows_the_best_settings_mean_over_its_folds(
    wide_terminal: Callable[[int], WideTerminal],
) -> None:
    out = wide_terminal(160)
    list(progress([_grid_event(1)], "val_acc", "val_loss", file=out))
    line = final_line(out)
    assert "val_acc=0.934 (best: lr=0.003, 5 folds)" in line  # not fold 4's 0.938
    assert "val_loss=0.183 (best: lr=0.003, 5 folds)" in line  # the mean of 0.185 ... 0.181


def test_members_without_folds_still_show_the_best_member() -> None:
    event = {"step": 1, "model": _Members([True, True, True]), "val_acc": [0.5, 0.9, 0.7]}
    out = Terminal()
    list(progress([event], "val_acc", file=out))
    assert "val_acc=0.9 (best: lr=0.01)" in final_line(out)
