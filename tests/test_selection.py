"""Tests for the stages that cut the stream short: take and early_stop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fitstream import early_stop, pipe, take


def metric_source(counting_source: Any, values: list[float], key: str = "val_loss") -> Any:
    """A counting source whose event i (1-based) carries ``values[i - 1]`` under ``key``."""
    return counting_source(None, fields=lambda i: {key: values[i - 1]})


def steps(stream: Any) -> list[int]:
    return [ev["step"] for ev in stream]


# --- take ----------------------------------------------------------------------------------


def test_take_keeps_first_n_and_never_pulls_more(counting_source: Any) -> None:
    source = counting_source()
    assert steps(pipe(source, take(3))) == [1, 2, 3]
    assert source.pulled == 3
    assert source.closed


def test_take_zero_pulls_nothing(counting_source: Any) -> None:
    source = counting_source()
    assert list(pipe(source, take(0))) == []
    assert source.pulled == 0


def test_take_more_than_available(counting_source: Any) -> None:
    source = counting_source(2)
    assert steps(take(source, 5)) == [1, 2]


def test_take_stream_first_form(counting_source: Any) -> None:
    source = counting_source()
    stream = take(source, 3)
    assert source.pulled == 0
    assert steps(stream) == [1, 2, 3]
    assert source.pulled == 3


def test_take_passes_events_unchanged() -> None:
    events = [{"step": 1}, {"step": 2}]
    out = list(take(events, 2))
    assert out[0] is events[0]
    assert out[1] is events[1]


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (-1, ValueError, r"take: 'n' must be a non-negative int, got -1"),
        (2.0, TypeError, r"take: 'n' must be a non-negative int, got float: 2.0"),
        ("3", TypeError, r"take: 'n' must be a non-negative int, got str: '3'"),
        (True, TypeError, r"take: 'n' must be a non-negative int, got bool: True"),
        (None, TypeError, r"take: 'n' must be a non-negative int, got NoneType: None"),
    ],
)
def test_take_rejects_bad_n(n: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        take(n)


# --- early_stop ----------------------------------------------------------------------------


def test_early_stop_stops_after_patience_and_pulls_no_more(counting_source: Any) -> None:
    source = metric_source(counting_source, [5.0, 4.0, 4.0, 4.0, 3.0, 2.0])
    assert steps(pipe(source, early_stop(key="val_loss", patience=2))) == [1, 2, 3, 4]
    assert source.pulled == 4
    assert source.closed


def test_early_stop_stream_first_form(counting_source: Any) -> None:
    source = metric_source(counting_source, [5.0, 4.0, 4.0, 4.0, 3.0, 2.0])
    stream = early_stop(source, key="val_loss", patience=2)
    assert source.pulled == 0
    assert steps(stream) == [1, 2, 3, 4]
    assert source.pulled == 4


def test_early_stop_positional_key_and_patience() -> None:
    events = [{"step": i, "val_loss": 1.0} for i in range(1, 10)]
    assert steps(early_stop(events, "val_loss", 1)) == [1, 2]
    assert steps(pipe(events, early_stop("val_loss", 1))) == [1, 2]


def test_early_stop_improvement_resets_patience(counting_source: Any) -> None:
    source = metric_source(counting_source, [5.0, 6.0, 4.0, 6.0, 6.0, 0.0])
    assert steps(early_stop(source, key="val_loss", patience=2)) == [1, 2, 3, 4, 5]
    assert source.pulled == 5


def test_early_stop_ends_with_the_source() -> None:
    events = [{"step": i, "val_loss": 1.0 / i} for i in range(1, 6)]
    assert steps(early_stop(events, key="val_loss", patience=2)) == [1, 2, 3, 4, 5]


def test_early_stop_max_mode(counting_source: Any) -> None:
    source = metric_source(counting_source, [0.1, 0.5, 0.4, 0.5, 0.9], key="acc")
    assert steps(early_stop(source, key="acc", patience=2, mode="max")) == [1, 2, 3, 4]


def test_early_stop_min_delta_requires_margin(counting_source: Any) -> None:
    # 0.95 and 0.91 are better than 1.0 but not by more than 0.1: they do not count.
    source = metric_source(counting_source, [1.0, 0.95, 0.91, 0.5])
    assert steps(early_stop(source, key="val_loss", patience=2, min_delta=0.1)) == [1, 2, 3]


def test_early_stop_min_delta_in_max_mode(counting_source: Any) -> None:
    source = metric_source(counting_source, [0.5, 0.55, 0.7, 0.75, 0.79], key="acc")
    out = steps(early_stop(source, key="acc", patience=2, mode="max", min_delta=0.1))
    assert out == [1, 2, 3, 4, 5]
    source = metric_source(counting_source, [0.5, 0.55, 0.7, 0.75, 0.79, 0.9], key="acc")
    out = steps(early_stop(source, key="acc", patience=2, mode="max", min_delta=0.1))
    assert out == [1, 2, 3, 4, 5]  # 0.75, 0.79: two events within 0.1 of 0.7


def test_early_stop_nan_never_improves(counting_source: Any) -> None:
    source = metric_source(counting_source, [1.0, math.nan, math.nan, 0.1])
    assert steps(early_stop(source, key="val_loss", patience=2)) == [1, 2, 3]


def test_early_stop_nan_first_then_numbers(counting_source: Any) -> None:
    # A leading NaN is a stale event; the first number then becomes the best.
    source = metric_source(counting_source, [math.nan, 3.0, 2.0, 2.5, 2.5, 1.0])
    assert steps(early_stop(source, key="val_loss", patience=2)) == [1, 2, 3, 4, 5]


def test_early_stop_nan_does_not_reset_best(counting_source: Any) -> None:
    # After a NaN, 1.5 is still compared with the best (1.0), not treated as a fresh start.
    source = metric_source(counting_source, [1.0, math.nan, 1.5, 0.5])
    assert steps(early_stop(source, key="val_loss", patience=2)) == [1, 2, 3]


def test_early_stop_accepts_tensors_and_numpy() -> None:
    values = [torch.tensor(3.0), np.float64(2.0), torch.tensor(2.0), torch.tensor(2.5)]
    events = [{"step": i, "val_loss": v} for i, v in enumerate(values, 1)]
    assert steps(early_stop(events, key="val_loss", patience=2)) == [1, 2, 3, 4]


def test_early_stop_passes_events_unchanged() -> None:
    events = [{"step": 1, "val_loss": 1.0}]
    out = list(early_stop(events, key="val_loss", patience=1))
    assert out[0] is events[0]
    assert out[0] == {"step": 1, "val_loss": 1.0}


def test_early_stop_missing_key_lists_event_keys(counting_source: Any) -> None:
    source = counting_source()
    stream = pipe(source, early_stop(key="val_acc", patience=3))
    with pytest.raises(
        KeyError,
        match=r"early_stop: the event has no key 'val_acc'; its keys are 'step', 'val_loss'",
    ):
        next(stream)
    assert source.closed


def test_early_stop_missing_key_message_names_the_filter_that_keeps_measured_epochs(
    counting_source: Any,
) -> None:
    # Validation every other epoch: odd epochs carry no val_loss. The error says what to do,
    # and doing it gives an early stop counted in validated epochs only.
    source = counting_source(fields=lambda i: {"val_loss": 1.0} if i % 2 == 0 else {})
    with pytest.raises(KeyError, match=r"pass on just those: \(ev for ev in events if 'val_loss'"):
        next(early_stop(source, key="val_loss", patience=2))
    source = counting_source(fields=lambda i: {"val_loss": 1.0} if i % 2 == 0 else {})
    validated = (ev for ev in source if "val_loss" in ev)
    assert [ev["step"] for ev in early_stop(validated, key="val_loss", patience=2)] == [2, 4, 6]
    assert source.pulled == 6  # stopped at the epoch that decided, no extra epoch


@pytest.mark.parametrize("value", ["high", True, torch.ones(2)])
def test_early_stop_non_numeric_value(value: Any) -> None:
    stream = early_stop([{"val_loss": value}], key="val_loss", patience=3)
    with pytest.raises(TypeError, match=r"early_stop: the value of 'val_loss' must be a number"):
        next(stream)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"patience": 0}, ValueError, r"early_stop: 'patience' must be a positive int, got 0"),
        ({"patience": -2}, ValueError, r"'patience' must be a positive int, got -2"),
        ({"patience": 2.5}, TypeError, r"'patience' must be a positive int, got float: 2.5"),
        ({"patience": True}, TypeError, r"'patience' must be a positive int, got bool: True"),
        ({"mode": "minimum"}, ValueError, r"'mode' must be 'min', 'max' or None, got 'minimum'"),
        ({"mode": "MAX"}, ValueError, r"'mode' must be 'min', 'max' or None, got 'MAX'"),
        ({"min_delta": -0.1}, ValueError, r"'min_delta' must be a non-negative number, got -0.1"),
        ({"min_delta": math.nan}, ValueError, r"'min_delta' must be a non-negative .*got nan"),
        ({"min_delta": "0"}, TypeError, r"'min_delta' must be a non-negative number, got str"),
        ({"key": 3}, TypeError, r"early_stop: 'key' must be a non-empty string .*got int: 3"),
        ({"key": ""}, ValueError, r"early_stop: 'key' must be a non-empty string .*got str: ''"),
    ],
)
def test_early_stop_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"key": "val_loss", "patience": 3, **kwargs}
    with pytest.raises(error, match=message):
        early_stop(**arguments)


def test_early_stop_checks_arguments_before_pulling(counting_source: Any) -> None:
    source = counting_source()
    with pytest.raises(ValueError, match="'patience' must be a positive int"):
        early_stop(source, key="val_loss", patience=0)
    assert source.pulled == 0
