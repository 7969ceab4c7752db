"""Tests for the side-effect stages tap and tick, and the print_keys callback."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fitstream import pipe, print_keys, tap, tick


def step_events(n: int) -> list[dict[str, Any]]:
    return [{"step": i} for i in range(1, n + 1)]


# --- tap -----------------------------------------------------------------------------------


def test_tap_calls_fn_on_each_event_and_passes_it_unchanged() -> None:
    events = step_events(3)
    seen: list[dict[str, Any]] = []
    out = list(pipe(events, tap(seen.append)))
    assert seen == events
    assert all(a is b for a, b in zip(out, events, strict=True))


@pytest.mark.parametrize(
    ("every", "start", "expected"),
    [
        (1, 1, [1, 2, 3, 4, 5, 6, 7]),
        (2, 1, [1, 3, 5, 7]),
        (2, 2, [2, 4, 6]),
        (3, 2, [2, 5]),
        (1, 6, [6, 7]),
        (1, 9, []),
    ],
)
def test_tap_every_and_start(every: int, start: int, expected: list[int]) -> None:
    seen: list[int] = []
    out = list(
        pipe(step_events(7), tap(lambda ev: seen.append(ev["step"]), every=every, start=start))
    )
    assert seen == expected
    assert len(out) == 7


def test_tap_counts_events_not_step_values() -> None:
    events = [{"step": 10}, {"step": 20}, {"step": 30}]
    seen: list[int] = []
    list(tap(events, lambda ev: seen.append(ev["step"]), every=2))
    assert seen == [10, 30]


def test_tap_stream_first_form() -> None:
    seen: list[int] = []
    out = list(tap(step_events(3), lambda ev: seen.append(ev["step"])))
    assert seen == [1, 2, 3]
    assert out == step_events(3)


def test_tap_runs_before_the_event_is_passed_on(counting_source: Any) -> None:
    seen: list[int] = []
    stream = tap(counting_source(), lambda ev: seen.append(ev["step"]))
    assert seen == []
    next(stream)
    assert seen == [1]


def test_tap_callback_error_propagates_and_closes_source(counting_source: Any) -> None:
    source = counting_source()

    def fails(ev: dict[str, Any]) -> None:
        if ev["step"] == 2:
            raise ValueError("callback broke")

    with pytest.raises(ValueError, match="callback broke"):
        list(pipe(source, tap(fails)))
    assert source.closed
    assert source.pulled == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fn": None}, TypeError, r"tap: 'fn' must be callable, got NoneType: None"),
        ({"every": 0}, ValueError, r"tap: 'every' must be a positive int, got 0"),
        ({"every": 1.5}, TypeError, r"tap: 'every' must be a positive int, got float: 1.5"),
        ({"start": 0}, ValueError, r"tap: 'start' must be a positive int, got 0"),
        ({"start": "1"}, TypeError, r"tap: 'start' must be a positive int, got str: '1'"),
    ],
)
def test_tap_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"fn": print, **kwargs}
    with pytest.raises(error, match=message):
        tap(**arguments)


# --- tick ----------------------------------------------------------------------------------


def test_tick_calls_fn_once_per_event() -> None:
    calls: list[None] = []
    events = step_events(4)
    out = list(pipe(events, tick(lambda: calls.append(None))))
    assert len(calls) == 4
    assert all(a is b for a, b in zip(out, events, strict=True))


def test_tick_stream_first_form() -> None:
    counter = iter(range(100))
    events = step_events(3)
    out = list(tick(events, counter.__next__))
    assert next(counter) == 3  # called once for each of the three events
    assert out == events


def test_tick_is_lazy(counting_source: Any) -> None:
    calls: list[None] = []
    stream = tick(counting_source(), lambda: calls.append(None))
    assert calls == []
    list(islice(stream, 2))
    assert len(calls) == 2


def test_tick_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match=r"tick: 'fn' must be callable, got str: 'step'"):
        tick("step")  # type: ignore[call-overload]


# --- print_keys ----------------------------------------------------------------------------


def printed(capsys: pytest.CaptureFixture[str], callback: Any, event: dict[str, Any]) -> str:
    callback(event)
    return capsys.readouterr().out


def test_print_keys_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(capsys, print_keys("train_loss", "val_loss"), {"step": 5, "train_loss": 0.12345})
    assert out == "step=0005 train_loss=0.1235 val_loss=NA\n"


def test_print_keys_precision_and_no_step(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(
        capsys,
        print_keys("train_loss", precision=2, include_step=False),
        {"step": 7, "train_loss": 1.0},
    )
    assert out == "train_loss=1.00\n"


def test_print_keys_event_without_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys, print_keys("train_loss"), {"train_loss": 0.5}) == "train_loss=0.5000\n"


def test_print_keys_custom_step_key(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(capsys, print_keys("loss", step_key="epoch"), {"epoch": 12, "step": 3, "loss": 2})
    assert out == "epoch=0012 loss=2\n"


def test_print_keys_only_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys, print_keys(), {"step": 3, "x": 1.0}) == "step=0003\n"


def test_print_keys_value_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    event = {
        "step": torch.tensor(2),
        "t": torch.tensor(0.5),
        "n": np.float32(0.25),
        "i": 120,
        "b": True,
        "nan": math.nan,
        "s": "ok",
        "vec": torch.zeros(3),
        "model": nn.Sequential(nn.Linear(2, 2), nn.ReLU()),
        "pair": (1, 2),
    }
    out = printed(capsys, print_keys("t", "n", "i", "b", "nan", "s", "vec", "model", "pair"), event)
    assert out == (
        "step=0002 t=0.5000 n=0.2500 i=120 b=True nan=nan s=ok "
        "vec=<Tensor shape=(3,)> model=<Sequential> pair=(1, 2)\n"
    )


def test_print_keys_non_integer_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys, print_keys(), {"step": 2.5}) == "step=2.5000\n"
    assert printed(capsys, print_keys(), {"step": "warmup"}) == "step=warmup\n"


def test_print_keys_with_tap_every(capsys: pytest.CaptureFixture[str]) -> None:
    events = [{"step": i, "train_loss": float(i)} for i in (1, 2, 3)]
    out = list(pipe(events, tap(print_keys("train_loss"), every=2)))
    assert capsys.readouterr().out.splitlines() == [
        "step=0001 train_loss=1.0000",
        "step=0003 train_loss=3.0000",
    ]
    assert out == events


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((), {"precision": -1}, ValueError, r"'precision' must be a non-negative int, got -1"),
        ((), {"precision": 2.0}, TypeError, r"'precision' must be a non-negative int, got float"),
        ((), {"include_step": False}, ValueError, r"at least one key when include_step=False"),
        ((["a", "b"],), {}, TypeError, r"print_keys: key 1 must be a string, got list"),
        (("a", 3), {}, TypeError, r"print_keys: key 2 must be a string, got int: 3"),
        ((), {"step_key": 0}, TypeError, r"print_keys: 'step_key' must be a string, got int: 0"),
    ],
)
def test_print_keys_rejects_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        print_keys(*args, **kwargs)
