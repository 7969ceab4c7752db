"""Sinks and print_keys on ensemble events: rows per member, lists kept, readable lines."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from fitstream import collect, collect_jsonl, collect_pd, pipe, print_keys, take, tap

pd = pytest.importorskip("pandas")

LOSSES = [[0.5, 0.4, 0.3], [0.25, 0.2, 0.15]]


def stream(stand_in_ensemble: Any, ensemble_events: Callable[..., Any], **extra: Any) -> Any:
    ensemble = stand_in_ensemble(
        3, hparams=[{"optimizer": "Adam", "lr": lr} for lr in (1e-3, 1e-2, 1e-1)]
    )
    fields = {"train_loss": LOSSES, "val_loss": [[v + 1 for v in row] for row in LOSSES]}
    source = ensemble_events(ensemble, fields)
    inner = source.fields

    def with_shared(i: int) -> dict[str, Any]:
        return {**inner(i), "train_time_sec": 0.5 * i, "per_class": [1.0, 2.0], **extra}

    source.fields = with_shared
    return source


def test_collect_pd_gives_one_row_per_step_and_member(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    source = stream(stand_in_ensemble, ensemble_events)
    frame = collect_pd(source)
    assert list(frame.columns) == [
        "step",
        "member",
        "optimizer",
        "lr",
        "train_loss",
        "val_loss",
        "train_time_sec",
        "per_class",
        "active",
    ]
    assert frame["active"].tolist() == [True] * 6
    assert len(frame) == 6
    assert frame["step"].tolist() == [1, 1, 1, 2, 2, 2]
    assert frame["member"].tolist() == [0, 1, 2, 0, 1, 2]
    assert frame["lr"].tolist() == [1e-3, 1e-2, 1e-1] * 2
    assert frame["optimizer"].tolist() == ["Adam"] * 6
    assert frame["train_loss"].tolist() == LOSSES[0] + LOSSES[1]
    assert frame["val_loss"].tolist() == pytest.approx([v + 1 for v in LOSSES[0] + LOSSES[1]])
    assert frame["train_time_sec"].tolist() == [0.5] * 3 + [1.0] * 3  # shared: repeated
    assert frame["per_class"].tolist() == [[1.0, 2.0]] * 6  # a list of another length stays
    assert source.closed


def test_collect_pd_include_names_member_and_hyperparameters(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    frame = collect_pd(
        stream(stand_in_ensemble, ensemble_events), include=["member", "lr", "val_loss"]
    )
    assert list(frame.columns) == ["member", "lr", "val_loss"]
    best = frame.loc[frame.groupby("member")["val_loss"].idxmin()]
    assert best["lr"].tolist() == [1e-3, 1e-2, 1e-1]
    with pytest.raises(KeyError, match=r"collect_pd: include names 'momentum', which none of"):
        collect_pd(stream(stand_in_ensemble, ensemble_events), include=["momentum"])


def test_an_event_key_wins_over_a_hyperparameter_of_the_same_name(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    frame = collect_pd(stream(stand_in_ensemble, ensemble_events, lr=[0.5, 0.6, 0.7]))
    assert frame["lr"].tolist() == [0.5, 0.6, 0.7] * 2
    assert list(frame.columns).count("lr") == 1


def test_collect_pd_refuses_an_event_that_has_a_member_key(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    source = stream(stand_in_ensemble, ensemble_events, member="x")
    with pytest.raises(ValueError, match=r"collect_pd: .*already has a key 'member'; rename it"):
        collect_pd(source)
    assert source.closed


def test_collect_pd_closes_the_source_when_it_raises(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"val_loss": [[1.0, 2.0]] * 4}, fail_at=3)
    with pytest.raises(RuntimeError, match="source failed at event 3"):
        collect_pd(source)
    assert source.closed
    assert source.pulled == 2


def test_collect_pd_reads_hyperparameters_at_each_event(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"val_loss": [[1.0, 2.0]] * 3})
    seen = []

    def retune(event: dict[str, Any]) -> None:  # hyperparameters that change as training goes
        ensemble._hparams = [{"lr": event["step"] * 10 + k} for k in range(2)]
        seen.append(event["step"])

    frame = collect_pd(pipe(source, tap(retune)))
    assert frame["lr"].tolist() == [10, 11, 20, 21, 30, 31]
    assert seen == [1, 2, 3]


def test_collect_and_jsonl_keep_per_member_lists(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    history = collect(stream(stand_in_ensemble, ensemble_events))
    assert [record["train_loss"] for record in history] == LOSSES
    assert all("model" not in record and "member" not in record for record in history)
    buffer = io.StringIO()
    collect_jsonl(stream(stand_in_ensemble, ensemble_events), buffer)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["train_loss"] for line in lines] == LOSSES
    assert lines[0]["per_class"] == [1.0, 2.0]


def test_a_single_models_events_keep_one_row_each(counting_source: Any) -> None:
    frame = collect_pd(counting_source(3, lambda i: {"val_loss": [0.1 * i, 0.2]}))
    assert len(frame) == 3
    assert "member" not in frame.columns


# -- print_keys ---------------------------------------------------------------------------------


def test_print_keys_lists_a_few_members(capsys: pytest.CaptureFixture[str]) -> None:
    print_keys("train_loss", precision=2)({"step": 3, "train_loss": [0.5, 0.25, 0.125]})
    assert capsys.readouterr().out == "step=0003 train_loss=[0.50, 0.25, 0.12]\n"


def test_print_keys_summarises_many_members(capsys: pytest.CaptureFixture[str]) -> None:
    losses = [1.0 + k / 100 for k in range(64)]
    losses[41] = 0.5
    losses[7] = 9.0
    losses[3] = math.nan
    print_keys("val_loss", precision=3)({"step": 12, "val_loss": losses})
    line = capsys.readouterr().out
    assert line == "step=0012 val_loss=[min 0.500 #41, med 1.320, max 9.000 #7, nan in 1]\n"
    assert len(line) < 80


def test_print_keys_on_all_nan_members(capsys: pytest.CaptureFixture[str]) -> None:
    print_keys("val_loss", include_step=False)({"val_loss": [math.nan] * 8})
    assert capsys.readouterr().out == "val_loss=[nan in all 8]\n"


def test_print_keys_in_an_ensemble_pipeline(
    stand_in_ensemble: Any,
    ensemble_events: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = stream(stand_in_ensemble, ensemble_events)
    list(pipe(source, tap(print_keys("train_loss", precision=1)), take(1)))
    assert capsys.readouterr().out == "step=0001 train_loss=[0.5, 0.4, 0.3]\n"
    assert source.pulled == 1
