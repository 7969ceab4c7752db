"""Tests of log_tensorboard and collect_tensorboard, read back with TensorBoard's own reader."""

from __future__ import annotations

import gc
import math
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torch.utils import tensorboard as torch_tensorboard

from fitstream import collect, collect_tensorboard, log_tensorboard, pipe, take
from fitstream.sinks._tensorboard_layout import (
    RunningBest,
    TagMap,
    custom_scalars_layout,
    lower_is_better,
    split_of,
)


def read_run(path: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(path: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in read_run(path).Scalars(tag)]


def runs_and_tags(path: Path) -> dict[str, list[str]]:
    """Every run (folder relative to ``path``) that has scalars, with its sorted tags."""
    found = {}
    for folder in sorted({p.parent for p in path.rglob("events.out.tfevents.*")}):
        tags = sorted(read_run(folder).Tags()["scalars"])
        if tags:
            found[folder.relative_to(path).as_posix()] = tags
    return found


def session_start(path: Path) -> dict[str, Any]:
    """The hyperparameters of the HParams session a run folder holds."""
    content = read_run(path).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {
        name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for name, value in start.session_start_info.hparams.items()
    }


def session_status(path: Path) -> int:
    content = read_run(path).PluginTagToContent("hparams")
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    return int(end.session_end_info.status)


def only_point(path: Path, tag: str) -> tuple[int, float]:
    """The single (step, value) of a tag logged once."""
    ((step, value),) = scalars(path, tag)
    return step, round(value, 6)  # stored as float32


def close(stream: Iterator[dict[str, Any]]) -> None:
    stream.close()  # type: ignore[attr-defined]  # a stage's stream is a generator


def layout_runs(path: Path) -> list[Path]:
    """The run folders under ``path`` (itself included) that hold a custom-scalars layout."""
    folders = sorted({p.parent for p in path.rglob("events.out.tfevents.*")})
    return [f for f in folders if "custom_scalars__config__" in read_run(f).Tags()["tensors"]]


def layout_of(path: Path) -> dict[str, list[str]]:
    """The last custom-scalars layout under ``path``, as {chart title: tag regexes}.

    It is written into one run only (TensorBoard merges every run's layout), one with data.
    """
    (holder,) = layout_runs(path)
    events = read_run(holder).Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[-1].tensor_proto.string_val[0])
    return {
        chart.title: list(chart.multiline.tag)
        or [
            tag
            for series in chart.margin.series
            for tag in (series.value, series.lower, series.upper)
        ]
        for category in layout.category
        for chart in category.chart
    }


def root_event_files(path: Path) -> list[Path]:
    """The event files in ``path`` itself: TensorBoard's run named ``.``."""
    return sorted(path.glob("events.out.tfevents.*"))


def history(n: int = 4) -> list[dict[str, Any]]:
    model = nn.Linear(1, 1)
    return [
        {
            "step": step,
            "model": model,
            "train_loss": torch.tensor(1.0 / step),
            "val_loss": np.float64(2.0 / step),
            "val_acc": [0.5, 0.75, 0.5, 0.9][(step - 1) % 4],
            "epochs_done": step,
            "is_best": step == 2,
            "note": "text",
            "per_class": torch.tensor([0.1, 0.2]),
        }
        for step in range(1, n + 1)
    ]


class SpyWriter(torch_tensorboard.SummaryWriter):
    """A SummaryWriter that records its instances and flushes."""

    instances: list[SpyWriter] = []  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flushes = 0
        SpyWriter.instances.append(self)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    @property
    def closed(self) -> bool:
        return self.file_writer is None


@pytest.fixture
def spy_writers(monkeypatch: pytest.MonkeyPatch) -> list[SpyWriter]:
    SpyWriter.instances = []
    monkeypatch.setattr(torch_tensorboard, "SummaryWriter", SpyWriter)
    return SpyWriter.instances


def raising_after(n: int, exc: BaseException) -> Iterator[dict[str, Any]]:
    for step in range(1, n + 1):
        yield {"step": step, "train_loss": 1.0 / step}
    raise exc


# --- what is written -------------------------------------------------------------------------


def test_events_pass_through_unchanged_and_splits_become_runs_sharing_a_tag(
    tmp_path: Path,
) -> None:
    events = history()
    out = list(log_tensorboard(events, tmp_path))
    assert all(a is b for a, b in zip(out, events, strict=True))
    # train and validation of one metric share the tag epoch/loss: one chart, two runs.
    assert runs_and_tags(tmp_path) == {
        "train": ["epoch/epochs_done", "epoch/loss"],
        "validation": ["epoch/acc", "epoch/loss"],
    }
    assert scalars(tmp_path / "train", "epoch/loss") == [
        (1, 1.0),
        (2, 0.5),
        (3, pytest.approx(1 / 3)),
        (4, 0.25),
    ]
    assert scalars(tmp_path / "validation", "epoch/loss") == [
        (1, 2.0),
        (2, 1.0),
        (3, pytest.approx(2 / 3)),
        (4, 0.5),
    ]
    assert scalars(tmp_path / "validation", "epoch/acc") == [
        (1, 0.5),
        (2, 0.75),
        (3, 0.5),
        (4, pytest.approx(0.9)),
    ]


def test_timings_are_left_out_unless_named(tmp_path: Path) -> None:
    events = [{"step": s, "train_loss": 1 / s, "train_time_sec": 0.1 * s} for s in (1, 2)]
    collect_tensorboard(events, tmp_path / "a")
    assert runs_and_tags(tmp_path / "a") == {"train": ["epoch/loss"]}
    collect_tensorboard(events, tmp_path / "b", keys=["train_loss", "train_time_sec"])
    assert runs_and_tags(tmp_path / "b") == {"train": ["epoch/loss", "epoch/time_sec"]}


def test_pipe_form_and_stream_form_agree(tmp_path: Path) -> None:
    steps = [ev["step"] for ev in pipe(history(), log_tensorboard(tmp_path / "a"))]
    assert steps == [1, 2, 3, 4]
    list(log_tensorboard(history(), log_dir=tmp_path / "b"))
    assert runs_and_tags(tmp_path / "a") == runs_and_tags(tmp_path / "b")
    assert scalars(tmp_path / "a/validation", "epoch/loss") == scalars(
        tmp_path / "b/validation", "epoch/loss"
    )


def test_keys_narrow_the_set_and_may_name_a_bool(tmp_path: Path) -> None:
    list(log_tensorboard(history(), tmp_path, keys=["val_loss", "is_best"]))
    assert runs_and_tags(tmp_path) == {"train": ["epoch/is_best"], "validation": ["epoch/loss"]}
    assert [v for _, v in scalars(tmp_path / "train", "epoch/is_best")] == [0.0, 1.0, 0.0, 0.0]


def test_a_key_some_events_lack_is_logged_where_present(tmp_path: Path) -> None:
    # As in a Lightning run with check_val_every_n_epoch=2: val_loss only every other epoch.
    events = [
        {"step": s, "train_loss": 1.0 / s, **({"val_loss": 2.0 / s} if s % 2 == 0 else {})}
        for s in range(1, 5)
    ]
    assert len(list(log_tensorboard(events, tmp_path, keys=["train_loss", "val_loss"]))) == 4
    assert scalars(tmp_path / "validation", "epoch/loss") == [(2, 1.0), (4, 0.5)]
    assert [step for step, _ in scalars(tmp_path / "train", "epoch/loss")] == [1, 2, 3, 4]


def test_a_key_no_event_had_lists_the_keys_at_the_end(tmp_path: Path, counting_source: Any) -> None:
    source = counting_source(n=3)
    stream = log_tensorboard(source, tmp_path, keys=["val_acc"])
    assert [ev["step"] for ev in islice(stream, 3)] == [1, 2, 3]
    with pytest.raises(
        KeyError,
        match=r"log_tensorboard: keys names 'val_acc', which none of the 3 events had; "
        r"they had keys: 'step', 'val_loss'",
    ):
        next(stream)
    assert source.closed


def test_a_key_no_event_had_warns_when_the_consumer_stops_early(
    tmp_path: Path, counting_source: Any
) -> None:
    source = counting_source()
    stream = log_tensorboard(source, tmp_path, keys=["val_acc"])
    next(stream)
    with pytest.warns(UserWarning, match=r"keys names 'val_acc', which the one event had"):
        stream.close()  # type: ignore[attr-defined]
    assert source.closed


def test_a_named_key_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"keys names 'note', whose value is not a number: got str"):
        list(log_tensorboard(history(), tmp_path, keys=["note"]))


def test_every_logs_every_nth_event_and_always_the_last(tmp_path: Path) -> None:
    list(log_tensorboard(history(8), tmp_path / "a", every=3, keys=["train_loss"]))
    assert [s for s, _ in scalars(tmp_path / "a/train", "epoch/loss")] == [1, 4, 7, 8]
    list(log_tensorboard(history(7), tmp_path / "b", every=3, keys=["train_loss"]))
    assert [s for s, _ in scalars(tmp_path / "b/train", "epoch/loss")] == [1, 4, 7]


def test_events_without_step_are_logged_at_their_position(tmp_path: Path) -> None:
    collect_tensorboard([{"loss": 0.5}, {"loss": 0.25}], tmp_path)
    assert scalars(tmp_path / "train", "epoch/loss") == [(1, 0.5), (2, 0.25)]


def test_a_step_that_is_not_an_int_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"an event's 'step' must be an int .*got str: 'one'"):
        collect_tensorboard([{"step": "one", "loss": 0.5}], tmp_path)


def test_nan_and_infinite_values_are_logged_as_they_are(tmp_path: Path) -> None:
    collect_tensorboard([{"step": 1, "loss": math.nan}, {"step": 2, "loss": math.inf}], tmp_path)
    values = [v for _, v in scalars(tmp_path / "train", "epoch/loss")]
    assert math.isnan(values[0])
    assert values[1] == math.inf


def test_keys_that_would_share_a_tag_stay_apart(tmp_path: Path) -> None:
    collect_tensorboard([{"step": 1, "loss": 0.5, "train_loss": 0.25}], tmp_path)
    assert scalars(tmp_path / "train", "epoch/loss") == [(1, 0.5)]
    assert scalars(tmp_path / "train", "epoch/train_loss") == [(1, 0.25)]


# --- custom scalars and hparams --------------------------------------------------------------


def test_the_custom_scalars_layout_has_the_time_series_charts(tmp_path: Path) -> None:
    events = [
        {"step": s, "train_loss": 1 / s, "val_loss": 2 / s, "train_acc": 0.5, "val_acc": 0.4}
        for s in (1, 2)
    ]
    collect_tensorboard(events, tmp_path)
    assert layout_of(tmp_path) == {"acc": ["^epoch/acc$"], "loss": ["^epoch/loss$"]}
    assert "" not in runs_and_tags(tmp_path)  # the layout, never a one-point card


def test_the_layout_is_rewritten_when_a_tag_appears_later(tmp_path: Path) -> None:
    events = [{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": 0.5, "val_acc": 0.7}]
    collect_tensorboard(events, tmp_path)
    assert layout_of(tmp_path) == {"acc": ["^epoch/acc$"], "loss": ["^epoch/loss$"]}


def test_hparams_make_a_session_and_running_bests_without_one_point_series(
    tmp_path: Path,
) -> None:
    hparams = {"lr": 0.01, "optimizer": "adam", "layers": torch.tensor(3), "unset": None}
    collect_tensorboard(
        history(), tmp_path, hparams=hparams, keys=["train_loss", "val_loss", "val_acc"]
    )
    # a whole number is written as text, which the table prints as given (not 3.0000)
    assert session_start(tmp_path) == {"lr": 0.01, "optimizer": "adam", "layers": "3"}
    assert session_status(tmp_path) == 1  # STATUS_SUCCESS
    # No experiment summary: TensorBoard unions the names of every session under --logdir.
    assert "_hparams_/experiment" not in read_run(tmp_path).PluginTagToContent("hparams")
    # Every series is a curve; the best values are running bests of the validation metrics.
    assert runs_and_tags(tmp_path) == {
        "train": ["epoch/loss"],
        "validation": ["epoch/acc", "epoch/loss", "hparams/acc_best", "hparams/loss_best"],
    }
    assert scalars(tmp_path / "validation", "hparams/acc_best") == [
        (1, 0.5),
        (2, 0.75),
        (3, 0.75),
        (4, pytest.approx(0.9)),
    ]
    assert [v for _, v in scalars(tmp_path / "validation", "hparams/loss_best")] == pytest.approx(
        [2.0, 1.0, 2 / 3, 0.5]
    )
    assert layout_of(tmp_path)["loss"] == ["^epoch/loss$", "^hparams/loss_best$"]


def test_runs_with_different_hparam_names_each_keep_theirs(tmp_path: Path) -> None:
    collect_tensorboard(history(2), tmp_path / "a", hparams={"lr": 0.1})
    collect_tensorboard(history(2), tmp_path / "b", hparams={"lr": 0.1, "momentum": 0.9})
    assert session_start(tmp_path / "a") == {"lr": 0.1}
    assert session_start(tmp_path / "b") == {"lr": 0.1, "momentum": 0.9}


def test_a_stream_that_raises_ends_its_session_as_a_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        collect_tensorboard(raising_after(2, RuntimeError("boom")), tmp_path, hparams={"lr": 1})
    assert session_status(tmp_path) == 2  # STATUS_FAILURE


def test_layout_rules() -> None:
    assert split_of("train_loss") == ("train", "loss")
    assert split_of("val/acc") == split_of("validation_acc") == split_of("acc_val")
    assert split_of("acc_valid") == ("validation", "acc")
    assert split_of("test/loss") == ("test", "loss")
    assert split_of("train_time_sec") == ("train", "time_sec")
    assert split_of("lr") == ("train", "lr")
    assert split_of("train") == ("train", "train")
    assert custom_scalars_layout([]) == {}
    assert custom_scalars_layout(["epoch/a.b"]) == {
        "fitstream": {"a.b": ["Multiline", [r"^epoch/a\.b$"]]}
    }
    tags = TagMap()
    assert tags.place("val_loss") == ("validation", "epoch/loss")
    assert tags.place("val_loss_best") == ("validation", "epoch/loss_best")
    assert tags.best("val_loss") == ("validation", "hparams/loss_best")  # its own group
    assert tags.best("val_loss_best") == ("validation", "hparams/loss_best_best")
    assert [lower_is_better(k) for k in ("mse", "val_error", "train_time_sec", "f1", "auc")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_running_best_picks_min_for_losses_max_otherwise_and_skips_nan() -> None:
    best = RunningBest()
    assert [best.update("val_loss", v) for v in (math.nan, 0.4, 0.6)] == [None, 0.4, 0.4]
    assert [best.update("val_acc", v) for v in (0.2, 0.9, math.nan)] == [0.2, 0.9, 0.9]


# --- ensembles -------------------------------------------------------------------------------


def test_an_ensemble_gets_one_run_per_member_each_a_session(tmp_path: Path, sweep: Any) -> None:
    # Each member's folder is named by what tells it apart from the others: its lr.
    collect_tensorboard(sweep(3, 3), tmp_path, hparams={"batch_size": 32})
    runs = runs_and_tags(tmp_path)
    names = ["lr=0.1", "lr=0.01", "lr=0.001"]
    assert sorted(runs) == sorted(
        f"{name}/{split}" for name in names for split in ("train", "validation")
    )
    assert runs["lr=0.001/validation"] == ["epoch/loss", "hparams/loss_best"]
    assert runs["lr=0.001/train"] == ["epoch/loss"]  # model and train_time_sec left out
    assert [v for _, v in scalars(tmp_path / "lr=0.001/train", "epoch/loss")] == pytest.approx(
        [3 / s for s in (1, 2, 3)]
    )
    assert [v for _, v in scalars(tmp_path / "lr=0.1/validation", "epoch/loss")] == (
        pytest.approx([2 / s for s in (1, 2, 3)])
    )
    # the table shows what was given and what differs; not the settings nobody varied
    assert session_start(tmp_path / "lr=0.01") == {
        "batch_size": "32",
        "member": "1",
        "lr": pytest.approx(0.01),
    }
    assert layout_of(tmp_path) == {"loss": ["^epoch/loss$", "^hparams/loss_best$"]}
    collect_tensorboard(sweep(3, 3), tmp_path / "all", hparams={"batch_size": 32}, all_hparams=True)
    assert session_start(tmp_path / "all" / "lr=0.01") == {
        "batch_size": "32",
        "member": "1",
        "optimizer": "Adam",
        "lr": pytest.approx(0.01),
        "betas": "(0.9, 0.999)",
    }


def test_an_ensemble_of_64_pads_member_folders_and_logs_shared_values_to_each(
    tmp_path: Path, sweep: Any
) -> None:
    # Members that nothing tells apart keep numbered folders, padded so that they sort.
    same = [{"optimizer": "Adam", "lr": 0.1}] * 64
    events = [{**ev, "lr": 0.1} for ev in sweep(64, 2, hparams=same)]
    collect_tensorboard(events, tmp_path, keys=["train_loss", "lr"])
    runs = runs_and_tags(tmp_path)
    assert len(runs) == 64
    assert runs["member_63/train"] == ["epoch/loss", "epoch/lr"]
    assert scalars(tmp_path / "member_07/train", "epoch/lr") == [
        (1, pytest.approx(0.1)),
        (2, pytest.approx(0.1)),
    ]


def test_a_named_per_member_key_of_the_wrong_length_is_refused(tmp_path: Path, sweep: Any) -> None:
    events = sweep(3, 1)
    events[0]["train_loss"] = [0.1, 0.2]
    with pytest.raises(
        TypeError,
        match=r"keys names 'train_loss', whose value is not a number or a list of 3 \(one per "
        r"member\): got list: \[0.1, 0.2\]",
    ):
        collect_tensorboard(events, tmp_path, keys=["train_loss"])


# --- argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        ({"log_dir": "a", "writer": object()}, ValueError, "pass log_dir or writer, not both"),
        ({"log_dir": 3}, TypeError, r"log_dir must be a folder path .*got int: 3"),
        ({"writer": object()}, TypeError, r"writer must be an open .*SummaryWriter.*got object"),
        ({"keys": "val_loss"}, TypeError, r"keys must be a list of key names, got str"),
        ({"keys": []}, ValueError, r"keys must name at least one key"),
        ({"every": 0}, ValueError, r"'every' must be a positive int, got 0"),
        ({"every": 1.5}, TypeError, r"'every' must be a positive int, got float"),
        ({"hparams": [("lr", 1)]}, TypeError, r"hparams must be a dict .*got list"),
        ({"hparams": {"sizes": [1, 2]}}, TypeError, r"hparams\['sizes'\] must be a number, str"),
        ({"hparams": {1: 2}}, TypeError, r"hparams keys must be non-empty str, got 1"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counting_source: Any,
    case: tuple[dict[str, Any], type[Exception], str],
) -> None:
    kwargs, error, message = case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=f"log_tensorboard: {message}"):
        log_tensorboard(**kwargs)
    source = counting_source(n=3)
    with pytest.raises(error, match=f"collect_tensorboard: {message}"):
        collect_tensorboard(source, **kwargs)
    assert source.pulled == 0
    assert list(tmp_path.iterdir()) == []


def test_collect_tensorboard_refuses_a_non_stream() -> None:
    with pytest.raises(TypeError, match=r"'events' must be an iterable of event dicts, got dict"):
        collect_tensorboard({"step": 1}, "runs")  # type: ignore[dict-item]


def test_missing_tensorboard_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(
        ImportError, match=r"log_tensorboard needs .*'tensorboard'.*fitstream\[tensorboard\]"
    ):
        log_tensorboard("runs/x")


# --- laziness and where it writes ------------------------------------------------------------


def test_nothing_is_opened_or_pulled_before_the_first_event(
    tmp_path: Path, counting_source: Any
) -> None:
    source = counting_source()
    stream = log_tensorboard(source, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert source.pulled == 0
    next(stream)
    assert source.pulled == 1
    assert (tmp_path / "run").is_dir()
    close(stream)


def test_take_after_it_pulls_no_extra_event(tmp_path: Path, counting_source: Any) -> None:
    source = counting_source()
    out = collect(pipe(source, log_tensorboard(tmp_path), take(3)))
    assert [ev["step"] for ev in out] == [1, 2, 3]
    assert source.pulled == 3
    assert source.closed


def test_default_folder_is_summarywriters_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    written = collect_tensorboard([{"step": 1, "loss": 0.5}])
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1
    assert Path(written).resolve() == run_dirs[0].resolve()
    assert scalars(run_dirs[0] / "train", "epoch/loss") == [(1, 0.5)]


# --- the writer's life -----------------------------------------------------------------------


def test_a_writer_it_opened_is_closed_when_the_stream_is_exhausted(
    tmp_path: Path, spy_writers: list[SpyWriter], counting_source: Any
) -> None:
    source = counting_source(n=3)
    assert collect_tensorboard(source, tmp_path, hparams={"lr": 0.1}) == str(tmp_path)
    assert len(spy_writers) == 2  # the run's own folder and its validation sub-run
    assert all(writer.closed for writer in spy_writers)
    assert source.closed
    assert [s for s, _ in scalars(tmp_path / "validation", "epoch/loss")] == [1, 2, 3]


def test_a_writer_it_opened_is_closed_when_the_consumer_stops_early(
    tmp_path: Path, spy_writers: list[SpyWriter], counting_source: Any
) -> None:
    source = counting_source()
    stream = log_tensorboard(source, tmp_path, hparams={"lr": 0.1})
    assert [ev["step"] for ev in islice(stream, 2)] == [1, 2]
    assert not any(writer.closed for writer in spy_writers)
    close(stream)
    assert all(writer.closed for writer in spy_writers)
    assert source.closed
    assert source.pulled == 2
    assert scalars(tmp_path / "validation", "hparams/loss_best") == [(1, 1.0), (2, 0.5)]
    assert session_status(tmp_path) == 1  # stopping early is a success


def test_a_dropped_stream_closes_its_writer(
    tmp_path: Path, spy_writers: list[SpyWriter], counting_source: Any
) -> None:
    source = counting_source()
    for event in log_tensorboard(source, tmp_path):
        if event["step"] == 2:
            break
    gc.collect()
    assert spy_writers
    assert all(writer.closed for writer in spy_writers)
    assert source.closed


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_writer_it_opened_is_closed_when_the_source_raises(
    tmp_path: Path, spy_writers: list[SpyWriter], exc: BaseException
) -> None:
    with pytest.raises(type(exc)):
        collect_tensorboard(raising_after(3, exc), tmp_path, hparams={"lr": 0.1})
    assert all(writer.closed for writer in spy_writers)
    assert [s for s, _ in scalars(tmp_path / "train", "epoch/loss")] == [1, 2, 3]
    assert session_status(tmp_path) == 2  # STATUS_FAILURE


def test_a_writer_passed_in_is_flushed_and_left_open(
    tmp_path: Path, spy_writers: list[SpyWriter]
) -> None:
    writer = SpyWriter(log_dir=str(tmp_path))
    try:
        assert collect_tensorboard(history(2), writer=writer, hparams={"lr": 0.1}) == str(tmp_path)
        assert not writer.closed
        assert writer.flushes >= 1
        assert scalars(tmp_path / "train", "epoch/loss") == [(1, 1.0), (2, 0.5)]
        assert session_start(tmp_path) == {"lr": 0.1}  # in the writer's own run
        with pytest.raises(RuntimeError, match="boom"):
            collect_tensorboard(raising_after(3, RuntimeError("boom")), writer=writer)
        assert not writer.closed
        writer.add_scalar("after", 1.0, 1)
    finally:
        writer.close()
    assert all(w.closed for w in spy_writers if w is not writer)  # the sub-runs' writers


def test_values_land_in_a_lightning_loggers_run(tmp_path: Path) -> None:
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.TensorBoardLogger(str(tmp_path), name="lit")
    collect_tensorboard(history(2), writer=logger.experiment, keys=["val_loss"])
    logger.finalize("success")
    assert scalars(Path(logger.log_dir) / "validation", "epoch/loss") == [(1, 2.0), (2, 1.0)]


def test_a_writer_its_owner_closed_mid_stream_gets_the_last_values_and_ends_closed(
    tmp_path: Path,
) -> None:
    writer = SpyWriter(log_dir=str(tmp_path))

    def owner_closes_after_step_2() -> Iterator[dict[str, Any]]:
        yield {"step": 1, "train_loss": 1.0}
        yield {"step": 2, "train_loss": 0.5}
        writer.close()  # as a Lightning TensorBoardLogger does when fit ends

    collect_tensorboard(owner_closes_after_step_2(), writer=writer, every=2, hparams={"lr": 0.1})
    assert writer.closed  # reopened for the last writes, closed again
    assert scalars(tmp_path / "train", "epoch/loss") == [(1, 1.0), (2, 0.5)]
    assert session_status(tmp_path) == 1


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated")
def test_a_fit_stream_logs_into_its_tensorboard_loggers_run(tmp_path: Path) -> None:
    pytest.importorskip("fitstream_lightning")
    from fitstream_lightning import fit_stream
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import TensorBoardLogger

    class LitModel(BoringModel):
        def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            loss = self.step(batch)
            self.log("val_loss", loss)  # Lightning's own logging, at the global step
            return {"x": loss}

    logger = TensorBoardLogger(str(tmp_path), name="lit")
    trainer = Trainer(
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=str(tmp_path),
    )
    stage = log_tensorboard(
        writer=logger.experiment, keys=["train_loss", "val_loss"], hparams={"lr": 0.1}
    )
    history = collect(pipe(fit_stream(trainer, LitModel()), stage))
    assert [ev["step"] for ev in history] == [1, 2, 3]

    # Lightning logged val_loss at the global step into its run; the stream's curves are in
    # sub-runs, tagged epoch/*, at the epoch: no tag holds two x-axes (issue 8, part 3).
    folder = Path(logger.log_dir)
    assert runs_and_tags(folder) == {
        ".": ["epoch", "val_loss"],
        "train": ["epoch/loss"],
        "validation": ["epoch/loss", "hparams/loss_best"],
    }
    lightning_steps = [step for step, _ in scalars(folder, "val_loss")]
    assert lightning_steps == [1, 3, 5]  # global steps: 2 batches an epoch
    logged = scalars(folder / "validation", "epoch/loss")
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [value for _, value in logged] == pytest.approx([ev["val_loss"] for ev in history])
    assert [step for step, _ in scalars(folder / "train", "epoch/loss")] == [1, 2, 3]
    # the run's one optimizer is named, as epoch_stream's is; the lr given wins
    assert session_start(folder) == {"optimizer": "SGD", "lr": 0.1}
    assert logger.experiment.all_writers is None  # Lightning closed it; nothing was reopened


def test_a_single_run_is_a_session_with_its_optimizers_name_and_lr(tmp_path: Path) -> None:
    model = nn.Linear(1, 1)
    adam = torch.optim.Adam(model.parameters(), lr=0.003)
    events = [{"step": s, "optimizer": adam, "val_loss": 1 / s} for s in (1, 2)]
    collect_tensorboard(events, tmp_path / "plain")
    assert session_start(tmp_path / "plain") == {"optimizer": "Adam", "lr": pytest.approx(0.003)}
    assert "hparams/loss_best" in runs_and_tags(tmp_path / "plain")["validation"]
    collect_tensorboard(events, tmp_path / "all", hparams={"width": 8}, all_hparams=True)
    assert session_start(tmp_path / "all") == {
        "optimizer": "Adam",
        "lr": pytest.approx(0.003),
        "weight_decay": 0,  # an optimizer's setting: a number, however it was written
        "beta1": pytest.approx(0.9),
        "beta2": pytest.approx(0.999),
        "eps": pytest.approx(1e-8),
        "amsgrad": False,
        "width": "8",
    }
    # no optimizer and no hparams: nothing to compare, no session and no running bests
    collect_tensorboard([{"step": 1, "val_loss": 1.0}], tmp_path / "bare")
    with pytest.raises(KeyError, match="Plugin 'hparams' could not be found"):
        read_run(tmp_path / "bare").PluginTagToContent("hparams")
    assert runs_and_tags(tmp_path / "bare") == {"validation": ["epoch/loss"]}
    with pytest.raises(
        TypeError, match=r"collect_tensorboard: 'all_hparams' must be True or False, got str: 'yes'"
    ):
        collect_tensorboard(events, tmp_path / "x", all_hparams="yes")


def test_a_step_too_large_for_the_x_axis_is_refused_naming_step(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"collect_tensorboard: an event's 'step' is too large"):
        collect_tensorboard([{"step": 10**400, "val_loss": 1.0}], tmp_path)
    collect_tensorboard([{"step": 2**53, "val_loss": 1.0}], tmp_path / "ok")  # still exact
    assert scalars(tmp_path / "ok" / "validation", "epoch/loss") == [(2**53, 1.0)]


# --- a grid: one run per setting ----------------------------------------------------------


LRS = (0.1, 0.01, 0.001, 0.0001)


@pytest.fixture
def grid_events(stand_in_ensemble: Any) -> Any:
    """``grid_events(n, folds=2, freeze_at=None)``: see :func:`_grid_events`."""
    return lambda *args, **kwargs: _grid_events(stand_in_ensemble, *args, **kwargs)


def _grid_events(
    ensemble_class: Any, n: int, folds: int = 2, freeze_at: dict[int, list[int]] | None = None
) -> Iterator[dict[str, Any]]:
    """n events of a folds x 4-lr grid (member ``s * folds + f`` is lr ``LRS[s]``, fold f).

    Member k's val_loss at step t is ``(k + 1) / t``; ``freeze_at[t]`` lists the members
    frozen after the event of step t.
    """
    hparams = [{"lr": lr, "fold": f, "width": 8} for lr in LRS for f in range(folds)]
    ensemble = ensemble_class(len(hparams), hparams=hparams)
    for t in range(1, n + 1):
        yield {
            "step": t,
            "model": ensemble,
            "train_loss": [(k + 1) / (2 * t) for k in range(len(hparams))],
            "lr": [h["lr"] for h in hparams],
            "val_loss": [(k + 1) / t for k in range(len(hparams))],
        }
        for member in (freeze_at or {}).get(t, []):
            ensemble.freeze(member)


def test_a_grid_writes_one_run_per_setting_with_its_mean_and_band(
    tmp_path: Path, grid_events: Any
) -> None:
    collect_tensorboard(grid_events(3), tmp_path)
    runs = runs_and_tags(tmp_path)
    names = [f"lr={lr:g}" for lr in LRS]
    # 8 members (2 folds x 4 lrs): 4 settings, 8 runs, not 16
    assert sorted(runs) == sorted(
        f"{n}/{split}" for n in names for split in ("train", "validation")
    )
    assert runs["lr=0.01/validation"] == [
        "epoch/loss", "folds/loss_high", "folds/loss_low", "hparams/loss_best",
    ]  # fmt: skip
    # lr, the same in every fold of a setting, has no band: it would only repeat the mean
    assert runs["lr=0.01/train"] == ["epoch/loss", "epoch/lr", "folds/loss_high", "folds/loss_low"]
    assert [v for _, v in scalars(tmp_path / "lr=0.01" / "train", "epoch/lr")] == pytest.approx(
        [0.01] * 3
    )
    # lr=0.01 is members 2 and 3: val_loss 3/t and 4/t, mean 3.5/t, std 0.5/t
    run = tmp_path / "lr=0.01" / "validation"
    assert [v for _, v in scalars(run, "epoch/loss")] == pytest.approx([3.5 / t for t in (1, 2, 3)])
    assert [v for _, v in scalars(run, "folds/loss_low")] == pytest.approx(
        [3 / t for t in (1, 2, 3)]
    )
    assert [v for _, v in scalars(run, "folds/loss_high")] == pytest.approx(
        [4 / t for t in (1, 2, 3)]
    )
    assert [v for _, v in scalars(run, "hparams/loss_best")] == pytest.approx([3.5, 1.75, 3.5 / 3])
    assert [step for step, _ in scalars(run, "epoch/loss")] == [1, 2, 3]
    # one session per setting: what differs between settings, and the number of folds, the
    # whole numbers as they were given; width is the same for all, so not a column
    assert session_start(tmp_path / "lr=0.01") == {"lr": pytest.approx(0.01), "folds": "2"}
    assert session_status(tmp_path / "lr=0.01") == 1
    assert root_event_files(tmp_path) == []  # no empty run named "."
    assert layout_of(tmp_path) == {
        "loss": ["^epoch/loss$", "^hparams/loss_best$"],
        "loss (mean ± std over folds)": ["epoch/loss", "folds/loss_low", "folds/loss_high"],
        "lr": ["^epoch/lr$"],
    }


def test_a_grid_table_equals_the_one_computed_from_the_members(
    tmp_path: Path, grid_events: Any
) -> None:
    events = list(grid_events(2, folds=3))
    collect_tensorboard(events, tmp_path / "grid")
    collect_tensorboard(events, tmp_path / "members", per_member=True)
    members = runs_and_tags(tmp_path / "members")
    assert len([r for r in members if r.endswith("/validation")]) == 12
    for lr in LRS:
        curves = [
            [
                v
                for _, v in scalars(
                    tmp_path / "members" / f"lr={lr:g},fold={f}" / "validation", "epoch/loss"
                )
            ]
            for f in range(3)
        ]
        means = [float(np.mean(c)) for c in zip(*curves, strict=True)]
        stds = [float(np.std(c)) for c in zip(*curves, strict=True)]
        grid = tmp_path / "grid" / f"lr={lr:g}" / "validation"
        assert [v for _, v in scalars(grid, "epoch/loss")] == pytest.approx(means, rel=1e-6)
        assert [v for _, v in scalars(grid, "folds/loss_high")] == pytest.approx(
            [m + d for m, d in zip(means, stds, strict=True)], rel=1e-6
        )
    assert session_start(tmp_path / "members" / "lr=0.1,fold=2") == {
        "lr": pytest.approx(0.1), "fold": "2", "member": "2",
    }  # fmt: skip


def test_a_settings_run_ends_when_its_last_fold_stops(tmp_path: Path, grid_events: Any) -> None:
    # lr=0.1 (members 0, 1): member 0 stops after step 1, member 1 after step 2
    collect_tensorboard(grid_events(4, freeze_at={1: [0], 2: [1]}), tmp_path)
    run = tmp_path / "lr=0.1" / "validation"
    assert [step for step, _ in scalars(run, "epoch/loss")] == [1, 2]
    other = tmp_path / "lr=0.01" / "validation"
    assert [step for step, _ in scalars(other, "epoch/loss")] == [1, 2, 3, 4]


def test_an_ensemble_without_folds_writes_nothing_into_the_log_folder_itself(
    tmp_path: Path, sweep: Any
) -> None:
    collect_tensorboard(sweep(3, 2), tmp_path)
    assert root_event_files(tmp_path) == []
    assert len(layout_runs(tmp_path)) == 1  # the layout, in one run that has data


def test_per_member_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"log_tensorboard: 'per_member' must be True or False, got int: 1"
    ):
        log_tensorboard(tmp_path, per_member=1)  # type: ignore[call-overload]


# --- a restarted run: every step once ------------------------------------------------------


def test_a_continued_stream_hides_what_the_killed_run_wrote_from_its_first_step(
    tmp_path: Path,
) -> None:
    killed = [{"step": s, "val_loss": 1.0 / s, "train_loss": 2.0 / s} for s in range(1, 8)]
    collect_tensorboard(killed, tmp_path)  # trained to step 7, its checkpoint at step 4
    again = [{"step": s, "val_loss": 10.0 / s, "train_loss": 20.0 / s} for s in range(5, 11)]
    collect_tensorboard(again, tmp_path)
    for split, scale in (("validation", 1.0), ("train", 2.0)):
        points = scalars(tmp_path / split, "epoch/loss")
        assert [step for step, _ in points] == list(range(1, 11))  # each step once
        expected = [scale / s for s in range(1, 5)] + [10 * scale / s for s in range(5, 11)]
        assert [v for _, v in points] == pytest.approx(expected, rel=1e-6)


def test_a_continued_grid_hides_the_killed_runs_points_in_every_setting(
    tmp_path: Path, grid_events: Any
) -> None:
    collect_tensorboard(grid_events(6), tmp_path)
    collect_tensorboard(islice(grid_events(9), 3, None), tmp_path)  # from step 4
    for lr in LRS:
        run = tmp_path / f"lr={lr:g}" / "validation"
        assert [step for step, _ in scalars(run, "epoch/loss")] == list(range(1, 10))
        assert [step for step, _ in scalars(run, "folds/loss_low")] == list(range(1, 10))


def test_a_stream_from_step_1_purges_nothing(tmp_path: Path) -> None:
    collect_tensorboard([{"step": 1, "val_loss": 1.0}], tmp_path / "a")
    collect_tensorboard(
        [{"step": 1, "val_loss": 2.0}], tmp_path / "a"
    )  # a second run, not a restart
    assert len(scalars(tmp_path / "a" / "validation", "epoch/loss")) == 2


def test_a_collected_grid_history_is_written_as_its_live_stream_is(
    tmp_path: Path, grid_events: Any
) -> None:
    live = list(grid_events(3))
    collect_tensorboard(live, tmp_path / "live")
    collect_tensorboard(collect(live), tmp_path / "collected")  # records: hparams, no model
    assert runs_and_tags(tmp_path / "collected") == runs_and_tags(tmp_path / "live")
    for lr in LRS:
        run = f"lr={lr:g}/validation"
        for tag in ("epoch/loss", "folds/loss_high"):
            assert scalars(tmp_path / "collected" / run, tag) == scalars(
                tmp_path / "live" / run, tag
            )
    assert session_start(tmp_path / "collected" / "lr=0.1") == session_start(
        tmp_path / "live" / "lr=0.1"
    )
