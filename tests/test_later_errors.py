"""Errors that can only come while the stream runs name the stage, key or callable at fault.

Also what a sink keeps: no autograd graph in a history, strict JSON in a JSONL file that reads
back to the same floats, and no line written into a file that was deleted.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import pytest
import torch

from fitstream import (
    collect,
    collect_jsonl,
    collect_tensorboard,
    early_stop,
    ema,
    pipe,
    plot_history,
    print_keys,
)

BIG = 10**400  # an int no float can hold


def test_a_stage_that_returns_no_iterable_is_named() -> None:
    def forgot_to_return(events: Any) -> None:
        for _ in events:
            pass

    with pytest.raises(TypeError, match=r"pipe: stage 2 \(.*forgot_to_return\) must return an"):
        pipe([{"step": 1}], lambda s: s, forgot_to_return)


@pytest.mark.parametrize("stage", ["ema", "early_stop"])
def test_a_value_too_large_for_a_float_names_the_key(stage: str) -> None:
    events = [{"step": 1, "loss": BIG}]
    stream = ema(events, "loss", decay=0.5) if stage == "ema" else early_stop(events, "loss", 2)
    with pytest.raises(ValueError, match=rf"{stage}: the value of 'loss' is too large for a float"):
        next(stream)


def test_tensorboard_names_the_key_too_large_for_a_float(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("tensorboard")
    with pytest.raises(ValueError, match="collect_tensorboard: the value of 'loss' is too large"):
        collect_tensorboard([{"step": 1, "loss": BIG}], tmp_path)
    with pytest.raises(ValueError, match="collect_tensorboard: the value of 'loss' is too large"):
        collect_tensorboard([{"step": 1, "loss": BIG}], tmp_path, keys=["loss"])


def test_print_keys_prints_a_huge_int_step_instead_of_failing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_keys("loss")({"step": BIG, "loss": 0.5})
    assert capsys.readouterr().out.startswith(f"step={BIG} loss=0.5000")


def test_collect_keeps_no_autograd_graph_in_nested_values() -> None:
    w = torch.ones(3, requires_grad=True)
    event = {
        "step": 1,
        "norms": [(w * 2).sum(), (w * 3).sum()],
        "per_layer": {"a": w * 2},
        "pair": ((w * 4).sum(), 1),
    }
    (record,) = collect([event])
    assert record["norms"] == [6.0, 9.0]
    assert record["pair"] == (12.0, 1)
    kept = record["per_layer"]["a"]
    assert isinstance(kept, torch.Tensor)
    assert not kept.requires_grad
    assert kept.grad_fn is None
    with torch.no_grad():
        w.mul_(5)  # the history does not follow the live tensor
    assert kept.tolist() == [2.0, 2.0, 2.0]


def _refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


def test_jsonl_is_strict_json_and_reads_back_to_the_same_floats(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "run.jsonl"
    events = [
        {"step": 1, "loss": math.nan, "grad": math.inf, "low": -math.inf},
        {"step": 2, "loss": 0.5, "grad": torch.tensor([1.0, math.nan]), "low": -1.0},
    ]
    collect_jsonl(events, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line, parse_constant=_refuse) for line in lines]
    assert records[0] == {"step": 1, "loss": "NaN", "grad": "Infinity", "low": "-Infinity"}
    assert records[1]["grad"] == [1.0, "NaN"]

    from fitstream.sinks._curves import read_history

    back = read_history(path, func="test")
    assert math.isnan(back[0]["loss"])
    assert back[0]["grad"] == math.inf
    assert back[0]["low"] == -math.inf
    assert back[1]["grad"][0] == 1.0
    assert math.isnan(back[1]["grad"][1])
    pytest.importorskip("matplotlib")
    figure = plot_history(path, ["loss", "low"])
    ys = {line.get_label(): line.get_ydata().tolist() for line in figure.axes[0].get_lines()}
    assert math.isnan(ys["loss"][0])
    assert ys["loss"][1] == 0.5


def test_jsonl_written_by_0_5_with_bare_nan_still_reads(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "old.jsonl"
    path.write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": 1.0}\n', encoding="utf-8")
    line = plot_history(path, "loss").axes[0].get_lines()[0]
    assert line.get_ydata()[1] == 1.0


def test_a_jsonl_file_deleted_while_writing_stops_the_stream(
    tmp_path: pathlib.Path, counting_source: Any
) -> None:
    path = tmp_path / "run.jsonl"
    source = counting_source(n=10)

    def deleting() -> Any:
        for event in source:
            if event["step"] == 3:
                os.remove(path)
            yield event

    with pytest.raises(
        FileNotFoundError, match=r"collect_jsonl: the file .*run\.jsonl' was deleted"
    ):
        collect_jsonl(deleting(), path)
    assert source.pulled == 3
    assert not path.exists()  # nothing re-created behind the user's back


def test_a_handle_whose_file_was_deleted_is_noticed_too(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "run.jsonl"
    with path.open("w", encoding="utf-8") as handle:

        def deleting() -> Any:
            yield {"step": 1}
            os.remove(path)
            yield {"step": 2}

        with pytest.raises(FileNotFoundError, match="was deleted or replaced"):
            collect_jsonl(deleting(), handle)
