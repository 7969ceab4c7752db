"""Tests of the sinks: collect, collect_jsonl, collect_pd."""

from __future__ import annotations

import io
import json
import math
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fitstream import collect, collect_jsonl, collect_pd


class FakeTrainer:
    """Looks like a Lightning Trainer to is_live_object."""

    callback_metrics: dict[str, float] = {}  # noqa: RUF012

    def fit(self) -> None:
        pass


def live_events() -> list[dict[str, Any]]:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return [
        {
            "step": step,
            "model": model,
            "optimizer": optimizer,
            "trainer": FakeTrainer(),
            "train_loss": torch.tensor(1.0 / step),
            "val_acc": np.float32(0.5),
            "lr": 0.1,
            "tag": "run-a",
        }
        for step in (1, 2)
    ]


def failing_after(n: int, exc: BaseException) -> Iterator[dict[str, Any]]:
    for step in range(1, n + 1):
        yield {"step": step, "train_loss": 1.0 / step}
    raise exc


@pytest.fixture
def opened_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every file that pathlib.Path.open hands out, to check it gets closed."""
    handles: list[Any] = []
    real_open = pathlib.Path.open

    def spy_open(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        handles.append(handle)
        return handle

    monkeypatch.setattr(pathlib.Path, "open", spy_open)
    return handles


# --- collect ---------------------------------------------------------------------------------


def test_collect_drops_live_objects_and_converts_scalars() -> None:
    records = collect(live_events())
    assert records == [
        {"step": 1, "train_loss": 1.0, "val_acc": 0.5, "lr": 0.1, "tag": "run-a"},
        {"step": 2, "train_loss": 0.5, "val_acc": 0.5, "lr": 0.1, "tag": "run-a"},
    ]
    assert type(records[0]["train_loss"]) is float
    assert type(records[0]["val_acc"]) is float


def test_collect_keeps_other_values_as_they_are() -> None:
    vector = torch.tensor([1.0, 2.0])
    records = collect([{"step": 1, "per_class": vector, "names": ["a", "b"]}])
    assert records[0]["per_class"] is vector
    assert records[0]["names"] == ["a", "b"]


def test_collect_returns_new_dicts() -> None:
    event = {"step": 1, "train_loss": 0.5}
    records = collect([event])
    records[0]["extra"] = 1
    assert event == {"step": 1, "train_loss": 0.5}


def test_collect_include_keeps_exactly_those_keys_in_order() -> None:
    records = collect(live_events(), include=["train_loss", "step"])
    assert [list(r) for r in records] == [["train_loss", "step"], ["train_loss", "step"]]
    assert records[1] == {"train_loss": 0.5, "step": 2}


def test_collect_include_keeps_a_live_object_named_explicitly() -> None:
    events = live_events()
    records = collect(events, include=["step", "model"])
    assert records[0]["model"] is events[0]["model"]


def test_collect_include_key_no_event_had_lists_the_keys_they_had(counting_source: Any) -> None:
    source = counting_source(n=3)
    with pytest.raises(
        KeyError,
        match=r"collect: include names 'val_acc', which none of the 3 events had; "
        r"they had keys: 'step', 'val_loss'",
    ):
        collect(source, include=["step", "val_acc"])
    assert source.closed


def test_collect_include_key_some_events_lack_is_kept_where_present() -> None:
    # As fit_stream emits with check_val_every_n_epoch=2: val_loss only every other epoch.
    events = [{"step": 1, "train_loss": 0.5}, {"step": 2, "train_loss": 0.4, "val_loss": 0.6}]
    assert collect(events, include=["step", "val_loss"]) == [
        {"step": 1},
        {"step": 2, "val_loss": 0.6},
    ]


def test_collect_exclude_drops_more_keys() -> None:
    records = collect(live_events(), exclude=["lr", "tag", "not_there"])
    assert records[0] == {"step": 1, "train_loss": 1.0, "val_acc": 0.5}


def test_collect_include_and_exclude_together_refused_before_pulling(
    counting_source: Any,
) -> None:
    source = counting_source(n=3)
    with pytest.raises(ValueError, match="collect: pass include or exclude, not both"):
        collect(source, include=["step"], exclude=["val_loss"])
    assert source.pulled == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"include": "step"}, TypeError, r"include must be a list of key names, got str: 'step'"),
        ({"exclude": 3}, TypeError, r"exclude must be a list of key names, got int: 3"),
        (
            {"include": ["step", 1]},
            TypeError,
            r"include must be strings \(event keys such as 'train_loss'\), got int at position 1",
        ),
        ({"include": []}, ValueError, r"include must name at least one key"),
    ],
)
def test_collect_bad_key_lists_refused_before_pulling(
    counting_source: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    source = counting_source(n=3)
    with pytest.raises(error, match=message):
        collect(source, **kwargs)
    assert source.pulled == 0


@pytest.mark.parametrize("sink", [collect, collect_pd])
def test_sinks_refuse_a_non_stream(sink: Any) -> None:
    with pytest.raises(TypeError, match=r"'events' must be an iterable of event dicts, got dict"):
        sink({"step": 1})


def test_collect_consumes_and_closes_the_source(counting_source: Any) -> None:
    source = counting_source(n=4)
    assert [r["step"] for r in collect(source)] == [1, 2, 3, 4]
    assert source.closed


def test_collect_closes_the_source_when_it_raises(counting_source: Any) -> None:
    source = counting_source(fail_at=3)
    with pytest.raises(RuntimeError, match="source failed at event 3"):
        collect(source)
    assert source.pulled == 2
    assert source.closed


# --- collect_jsonl ---------------------------------------------------------------------------


def read_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_collect_jsonl_writes_records_to_a_new_nested_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "runs" / "deep" / "history.jsonl"
    collect_jsonl(live_events(), path)
    assert read_lines(path) == [
        {"step": 1, "train_loss": 1.0, "val_acc": 0.5, "lr": 0.1, "tag": "run-a"},
        {"step": 2, "train_loss": 0.5, "val_acc": 0.5, "lr": 0.1, "tag": "run-a"},
    ]


def test_collect_jsonl_accepts_a_str_path_and_overwrites(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("old content\n", encoding="utf-8")
    collect_jsonl([{"step": 1}], str(path))
    assert path.read_text(encoding="utf-8") == '{"step": 1}\n'


def _steps_file(path: pathlib.Path, steps: range, tag: str) -> None:
    path.write_text("".join(f'{{"step": {s}, "run": "{tag}"}}\n' for s in steps), encoding="utf-8")


def test_collect_jsonl_continuing_a_run_keeps_the_lines_before_its_first_step(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "history.jsonl"
    _steps_file(path, range(1, 8), "killed")  # killed at step 7, its checkpoint at step 4
    collect_jsonl(({"step": s, "run": "again"} for s in range(5, 9)), path)
    assert [(r["step"], r["run"]) for r in read_lines(path)] == [
        (1, "killed"), (2, "killed"), (3, "killed"), (4, "killed"),
        (5, "again"), (6, "again"), (7, "again"), (8, "again"),
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl"]  # no temporary file


def test_collect_jsonl_a_stream_from_step_1_starts_the_file_afresh(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.jsonl"
    _steps_file(path, range(1, 8), "old")
    collect_jsonl([{"step": 1, "run": "new"}], path)
    assert read_lines(path) == [{"step": 1, "run": "new"}]


def test_collect_jsonl_drops_a_line_cut_by_the_crash_when_continuing(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "history.jsonl"
    _steps_file(path, range(1, 4), "killed")
    with path.open("a", encoding="utf-8") as file:
        file.write('{"step": 4, "val_lo')  # the process died while writing it
    collect_jsonl([{"step": 3, "run": "again"}, {"step": 4, "run": "again"}], path)
    assert [(r["step"], r["run"]) for r in read_lines(path)] == [
        (1, "killed"), (2, "killed"), (3, "again"), (4, "again"),
    ]  # fmt: skip


def test_collect_jsonl_leaves_the_file_untouched_when_no_event_comes(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "history.jsonl"
    _steps_file(path, range(1, 4), "kept")

    def fails_at_once() -> Iterator[dict[str, Any]]:
        raise OSError("the checkpoint cannot be read")
        yield {}

    with pytest.raises(OSError, match="cannot be read"):
        collect_jsonl(fails_at_once(), path)
    assert [r["step"] for r in read_lines(path)] == [1, 2, 3]  # nothing lost before the restart


def test_collect_jsonl_include_and_exclude(tmp_path: pathlib.Path) -> None:
    collect_jsonl(live_events(), tmp_path / "a.jsonl", include=["step", "val_acc"])
    collect_jsonl(live_events(), tmp_path / "b.jsonl", exclude=["tag", "lr", "val_acc"])
    assert read_lines(tmp_path / "a.jsonl") == [
        {"step": 1, "val_acc": 0.5},
        {"step": 2, "val_acc": 0.5},
    ]
    assert read_lines(tmp_path / "b.jsonl") == [
        {"step": 1, "train_loss": 1.0},
        {"step": 2, "train_loss": 0.5},
    ]


def test_collect_jsonl_leaves_a_file_passed_in_open_and_flushed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("# header\n")
        collect_jsonl([{"step": 1, "train_loss": 0.5}], handle)
        assert not handle.closed
        assert path.read_text(encoding="utf-8") == '# header\n{"step": 1, "train_loss": 0.5}\n'


def test_collect_jsonl_writes_to_a_string_buffer() -> None:
    buffer = io.StringIO()
    collect_jsonl([{"step": 1}, {"step": 2}], buffer)
    assert buffer.getvalue() == '{"step": 1}\n{"step": 2}\n'


def test_collect_jsonl_flushes_each_event_before_pulling_the_next(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "history.jsonl"
    lines_seen: list[int] = []

    def source() -> Iterator[dict[str, Any]]:
        for step in range(1, 5):
            lines_seen.append(len(path.read_text(encoding="utf-8").splitlines()))
            yield {"step": step}

    collect_jsonl(source(), path)
    assert lines_seen == [0, 1, 2, 3]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_collect_jsonl_keeps_complete_lines_and_closes_when_the_source_fails(
    tmp_path: pathlib.Path, opened_files: list[Any], exc: BaseException
) -> None:
    path = tmp_path / "history.jsonl"
    with pytest.raises(type(exc)):
        collect_jsonl(failing_after(3, exc), path)
    assert len(opened_files) == 1
    assert opened_files[0].closed
    assert [r["step"] for r in read_lines(path)] == [1, 2, 3]
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_collect_jsonl_closes_its_file_on_exhaustion(
    tmp_path: pathlib.Path, opened_files: list[Any], counting_source: Any
) -> None:
    source = counting_source(n=2)
    collect_jsonl(source, tmp_path / "h.jsonl")
    assert opened_files[0].closed
    assert source.closed


def _refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


def test_collect_jsonl_converts_numbers_and_writes_non_finite_floats(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "h.jsonl"
    event = {
        "step": np.int64(3),
        "loss": torch.tensor(float("nan")),
        "grad_norm": float("inf"),
        "low": -math.inf,
        "acc": np.float64(0.75),
        "per_class": torch.tensor([0.5, 1.0]),
        "confusion": np.array([[1, 0], [0, 1]]),
        "nested": {"a": (1, torch.tensor(2))},
        "flag": True,
        "note": None,
    }
    collect_jsonl([event], path)
    text = path.read_text(encoding="utf-8")
    assert '"loss": "NaN"' in text
    assert '"grad_norm": "Infinity"' in text
    assert '"low": "-Infinity"' in text
    record = json.loads(text, parse_constant=_refuse)  # strict JSON: no bare NaN/Infinity
    assert record.pop("loss") == "NaN"
    assert record == {
        "step": 3,
        "grad_norm": "Infinity",
        "low": "-Infinity",
        "acc": 0.75,
        "per_class": [0.5, 1.0],
        "confusion": [[1, 0], [0, 1]],
        "nested": {"a": [1, 2]},
        "flag": True,
        "note": None,
    }


def test_collect_jsonl_refuses_a_value_it_cannot_write_and_keeps_earlier_lines(
    tmp_path: pathlib.Path, opened_files: list[Any]
) -> None:
    path = tmp_path / "h.jsonl"
    events: list[dict[str, Any]] = [
        {"step": 1, "when": 0.5},
        {"step": 2, "when": pathlib.PurePath("x")},
    ]
    with pytest.raises(TypeError, match=r"cannot write key 'when': a value of type PurePosixPath"):
        collect_jsonl(events, path)
    assert read_lines(path) == [{"step": 1, "when": 0.5}]
    assert opened_files[0].closed


def test_collect_jsonl_refuses_a_live_object_named_in_include() -> None:
    with pytest.raises(TypeError, match=r"cannot write key 'model': a value of type Linear"):
        collect_jsonl(live_events(), io.StringIO(), include=["step", "model"])


def test_collect_jsonl_writes_int_keys_as_digits_at_every_level() -> None:
    out = io.StringIO()
    collect_jsonl([{"step": 1, 7: 0.5, "counts": {1: 2, "a": {3: 4}}}], out)
    assert json.loads(out.getvalue()) == {"step": 1, "7": 0.5, "counts": {"1": 2, "a": {"3": 4}}}


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        ({"counts": {(1, 2): 2}}, TypeError, r"key 'counts': its dict has a key of type tuple"),
        ({"c": {"d": {1.5: 2}}}, TypeError, r"key 'c.d': its dict has a key of type float"),
        ({(1, 2): 3}, TypeError, r"key '\(1, 2\)': the event has a key of type tuple"),
        ({"m": torch.zeros(2, device="meta")}, TypeError, r"key 'm': a tensor on the meta device"),
        ({"r": "loop"}, ValueError, r"key 'r': its list holds itself"),
        ({"r": "loop-dict"}, ValueError, r"key 'r.self.self': its dict holds itself"),
    ],
)
def test_collect_jsonl_names_the_key_it_cannot_write(
    event: dict[Any, Any], error: type[Exception], match: str
) -> None:
    if event.get("r") == "loop":
        looped: list[Any] = [1]
        looped.append(looped)
        event = {"r": looped}
    elif event.get("r") == "loop-dict":
        inner: dict[str, Any] = {}
        inner["self"] = inner
        event = {"r": inner}
    with pytest.raises(error, match=f"^collect_jsonl: cannot write {match}"):
        collect_jsonl([{"step": 1, **event}], io.StringIO())


def test_collect_jsonl_include_key_no_event_had(tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "h.jsonl"
    with pytest.raises(KeyError, match=r"collect_jsonl: include names 'val_loss'.*'step'"):
        collect_jsonl([{"step": 1}, {"step": 2}], dest, include=["step", "val_loss"])
    # What the events had was written before the error: nothing is lost.
    assert dest.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']


@pytest.mark.parametrize(
    ("dest", "message"),
    [
        (3, r"dest must be a path \(str or os.PathLike\) or a file opened .*, got int"),
        (io.BytesIO(), r"dest must be opened in text mode"),
    ],
)
def test_collect_jsonl_bad_dest_refused_before_pulling(
    counting_source: Any, dest: Any, message: str
) -> None:
    source = counting_source(n=3)
    with pytest.raises(TypeError, match=message):
        collect_jsonl(source, dest)
    assert source.pulled == 0


def test_collect_jsonl_refuses_a_binary_file(tmp_path: pathlib.Path) -> None:
    with (tmp_path / "h.jsonl").open("wb") as handle, pytest.raises(TypeError, match="text mode"):
        collect_jsonl([{"step": 1}], handle)  # type: ignore[arg-type]


def test_collect_jsonl_refuses_a_directory(tmp_path: pathlib.Path, counting_source: Any) -> None:
    source = counting_source(n=3)
    with pytest.raises(IsADirectoryError, match=r"dest .* is a folder; give the path of a file"):
        collect_jsonl(source, tmp_path)
    assert source.pulled == 0


def test_collect_jsonl_include_and_exclude_refused_before_opening(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "h.jsonl"
    with pytest.raises(ValueError, match="collect_jsonl: pass include or exclude, not both"):
        collect_jsonl([{"step": 1}], path, include=["step"], exclude=["x"])
    assert not path.exists()


# --- collect_pd ------------------------------------------------------------------------------


def test_collect_pd_builds_a_numeric_frame() -> None:
    frame = collect_pd(live_events())
    assert list(frame.columns) == ["step", "train_loss", "val_acc", "lr", "tag"]
    assert frame["train_loss"].tolist() == [1.0, 0.5]
    assert frame["train_loss"].dtype == np.float64


def test_collect_pd_include_orders_columns_even_for_an_empty_stream() -> None:
    assert list(collect_pd(live_events(), include=["lr", "step"]).columns) == ["lr", "step"]
    empty = collect_pd(iter([]), include=["step", "val_loss"])
    assert list(empty.columns) == ["step", "val_loss"]
    assert len(empty) == 0


def test_collect_pd_missing_keys_become_nan() -> None:
    frame = collect_pd([{"step": 1, "train_loss": 0.5}, {"step": 2, "val_loss": 0.4}])
    assert math.isnan(frame["val_loss"][0])
    assert frame["val_loss"][1] == 0.4


def test_collect_pd_exclude_and_errors(counting_source: Any) -> None:
    assert list(collect_pd(live_events(), exclude=["tag", "lr"]).columns) == [
        "step",
        "train_loss",
        "val_acc",
    ]
    with pytest.raises(KeyError, match=r"collect_pd: include names 'acc'"):
        collect_pd(counting_source(n=2), include=["acc"])
    partial = collect_pd([{"step": 1}, {"step": 2, "acc": 0.5}], include=["step", "acc"])
    assert partial["step"].tolist() == [1, 2]
    assert partial["acc"].isna().tolist() == [True, False]
    source = counting_source(n=2)
    with pytest.raises(ValueError, match="collect_pd: pass include or exclude, not both"):
        collect_pd(source, include=["step"], exclude=["x"])
    assert source.pulled == 0


def test_collect_pd_without_pandas_names_the_extra_before_pulling(
    monkeypatch: pytest.MonkeyPatch, counting_source: Any
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    source = counting_source(n=3)
    with pytest.raises(ImportError, match=r"collect_pd needs .*'pandas'.*fitstream\[pandas\]"):
        collect_pd(source)
    assert source.pulled == 0
