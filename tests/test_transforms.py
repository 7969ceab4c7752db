"""Tests for the key-adding stages: augment and ema."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fitstream import Event, augment, ema, pipe

LOSSES = [10.0, 20.0, 30.0]


def loss_events() -> list[dict[str, Any]]:
    return [{"step": i, "loss": v} for i, v in enumerate(LOSSES, start=1)]


def add_one(ev: dict[str, Any]) -> dict[str, Any]:
    return {"plus_one": ev["step"] + 1}


# --- augment -----------------------------------------------------------------------------


def test_augment_merges_extra_keys() -> None:
    out = list(pipe(loss_events(), augment(add_one)))
    assert [ev["plus_one"] for ev in out] == [2, 3, 4]
    assert [ev["loss"] for ev in out] == LOSSES


def test_augment_none_adds_nothing() -> None:
    events = loss_events()
    out = list(pipe(events, augment(lambda ev: None)))
    assert out == events


def test_augment_leaves_incoming_event_untouched() -> None:
    events = loss_events()
    out = list(pipe(events, augment(add_one)))
    assert all("plus_one" not in ev for ev in events)
    assert all(new is not old for new, old in zip(out, events, strict=True))


def test_augment_keeps_event_type() -> None:
    out = list(pipe([Event(step=1)], augment(add_one)))
    assert type(out[0]) is Event
    assert out[0] == {"step": 1, "plus_one": 2}


def test_augment_value_overrides_existing_key() -> None:
    out = list(pipe([{"step": 1, "loss": 5.0}], augment(lambda ev: {"loss": 1.0})))
    assert out[0]["loss"] == 1.0


def test_augment_accepts_any_mapping() -> None:
    from types import MappingProxyType

    out = list(pipe([{"step": 1}], augment(lambda ev: MappingProxyType({"x": 1}))))
    assert out == [{"step": 1, "x": 1}]


def test_augment_stream_first_form() -> None:
    out = list(augment(loss_events(), add_one))
    assert [ev["plus_one"] for ev in out] == [2, 3, 4]


def test_augment_rejects_non_callable_at_call() -> None:
    with pytest.raises(TypeError, match=r"augment: 'fn' must be callable, got int: 3"):
        augment(3)  # type: ignore[call-overload]


def test_augment_non_mapping_result_raises_when_processed() -> None:
    def bad(ev: dict[str, Any]) -> Any:
        return [ev["step"]]

    stream = pipe(loss_events(), augment(bad))  # no error yet: nothing processed
    with pytest.raises(
        TypeError, match=r"augment: the augmenter .*bad must return a mapping .*got list: \[1\]"
    ):
        next(stream)


def test_augment_error_from_augmenter_propagates(counting_source: Any) -> None:
    source = counting_source(5)

    def fails(ev: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("inside augmenter")

    with pytest.raises(ZeroDivisionError, match="inside augmenter"):
        list(pipe(source, augment(fails)))
    assert source.closed
    assert source.pulled == 1


# --- ema ---------------------------------------------------------------------------------


def test_ema_with_bias_correction() -> None:
    out = [ev["loss_ema"] for ev in pipe(loss_events(), ema("loss", decay=0.5))]
    assert out == pytest.approx([10.0, 50 / 3, 170 / 7])


def test_ema_without_bias_correction() -> None:
    out = [
        ev["loss_ema"] for ev in pipe(loss_events(), ema("loss", decay=0.5, bias_correction=False))
    ]
    assert out == pytest.approx([5.0, 12.5, 21.25])


def test_ema_half_life_matches_decay() -> None:
    by_decay = [ev["loss_ema"] for ev in ema(loss_events(), "loss", decay=2 ** (-1 / 3))]
    by_half_life = [ev["loss_ema"] for ev in ema(loss_events(), "loss", half_life=3)]
    assert by_half_life == pytest.approx(by_decay)


def test_ema_constant_input_is_constant_with_bias_correction() -> None:
    out = [ev["x_ema"] for ev in ema([{"x": 3.0}] * 50, "x", decay=0.9)]
    assert out == pytest.approx([3.0] * 50)


def test_ema_out_key_and_original_kept() -> None:
    out = list(pipe(loss_events(), ema("loss", decay=0.5, out_key="smooth")))
    assert "loss_ema" not in out[0]
    assert out[0]["smooth"] == 10.0
    assert out[0]["loss"] == 10.0


def test_ema_leaves_incoming_event_untouched_and_keeps_type() -> None:
    events = [Event(step=1, loss=1.0)]
    out = list(ema(events, "loss", decay=0.5))
    assert type(out[0]) is Event
    assert "loss_ema" not in events[0]


def test_ema_accepts_tensors_and_numpy_scalars() -> None:
    events = [{"loss": torch.tensor(2.0)}, {"loss": np.float32(2.0)}, {"loss": 2}]
    out = [ev["loss_ema"] for ev in ema(events, "loss", decay=0.5)]
    assert out == pytest.approx([2.0, 2.0, 2.0])
    assert all(type(v) is float for v in out)


def test_ema_nan_is_shown_not_hidden() -> None:
    events = [{"loss": 1.0}, {"loss": math.nan}, {"loss": 1.0}]
    out = [ev["loss_ema"] for ev in ema(events, "loss", decay=0.5)]
    assert out[0] == 1.0
    assert math.isnan(out[1])
    assert math.isnan(out[2])


def test_ema_stream_first_form() -> None:
    out = list(ema(loss_events(), "loss", decay=0.5))
    assert out[0]["loss_ema"] == 10.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"ema: pass exactly one of 'decay' or 'half_life', got decay=None and half_life=None"),
        ({"decay": 0.9, "half_life": 10}, r"exactly one .* got decay=0.9 and half_life=10"),
        ({"decay": 0.0}, r"ema: 'decay' must be strictly between 0 and 1, got 0.0"),
        ({"decay": 1.0}, r"'decay' must be strictly between 0 and 1, got 1.0"),
        ({"decay": -0.1}, r"'decay' must be strictly between 0 and 1, got -0.1"),
        ({"decay": 1.1}, r"'decay' must be strictly between 0 and 1, got 1.1"),
        ({"decay": math.nan}, r"'decay' must be strictly between 0 and 1, got nan"),
        ({"half_life": 0}, r"ema: 'half_life' must be a positive finite number .*got 0"),
        ({"half_life": -1.0}, r"'half_life' must be a positive finite number .*got -1.0"),
        ({"half_life": math.inf}, r"'half_life' must be a positive finite number .*got inf"),
    ],
)
def test_ema_rejects_bad_smoothing(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ema("loss", **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("loss",), {"decay": "0.9"}, r"ema: 'decay' must be a number, got str: '0.9'"),
        (("loss",), {"half_life": True}, r"ema: 'half_life' must be a number, got bool: True"),
        ((3,), {"decay": 0.9}, r"ema: 'key' must be a non-empty string .*, got int: 3"),
        (("loss",), {"decay": 0.9, "out_key": 1}, r"ema: 'out_key' must be a non-empty string"),
    ],
)
def test_ema_rejects_wrong_types(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        ema(*args, **kwargs)


def test_ema_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match=r"ema: 'key' must be a non-empty string .*got str: ''"):
        ema("", decay=0.9)


def test_ema_missing_key_lists_event_keys() -> None:
    stream = ema([{"step": 1, "train_loss": 0.5}], "val_loss", decay=0.9)
    with pytest.raises(
        KeyError, match=r"ema: the event has no key 'val_loss'; its keys are 'step', 'train_loss'"
    ):
        next(stream)


def test_ema_non_numeric_value() -> None:
    stream = ema([{"loss": "abc"}], "loss", decay=0.9)
    with pytest.raises(TypeError, match=r"ema: the value of 'loss' must be a number .*str: 'abc'"):
        next(stream)
