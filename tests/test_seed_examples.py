"""The examples of the seed document, each run as written and checked for what it promises.

Two slips of the seed are fixed: positional arguments after keywords in the first example
(``epoch_stream((X, y), model, optimizer, loss, batch_size=32, shuffle=True)``) and
``islice(..., n=100)``, which ``itertools.islice`` does not accept (``islice(..., 100)``). The
seed writes ``epoch_stream(...)`` for "a stream as above": here that is :func:`_stream`, and
``validation_loss(...)`` is the validation loss on :func:`get_validation_set`. The seed's plain
``for`` loops run forever on an endless stream; the tests leave them after a few epochs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import linalg, nn
from torch.optim import Adam

from fitstream import (
    augment,
    collect,
    collect_jsonl,
    early_stop,
    epoch_stream,
    pipe,
    validation_loss,
)

_SOURCE = torch.Generator().manual_seed(2024)
_X = torch.randn(400, 8, generator=_SOURCE)
# Noisy labels: a wide network overfits the 200 training rows, so the validation loss turns up.
_Y = ((_X[:, 0] - _X[:, 1] + torch.randn(400, generator=_SOURCE)) > 0).long()


def get_data() -> tuple[torch.Tensor, torch.Tensor]:
    return _X[:200], _Y[:200]


def get_validation_set() -> tuple[torch.Tensor, torch.Tensor]:
    return _X[200:], _Y[200:]


def get_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 2))


def get_loss() -> nn.Module:
    return nn.CrossEntropyLoss()


def _stream() -> Iterator[dict[str, Any]]:
    """What the seed writes as ``epoch_stream(...)``: a fresh model trained on ``get_data()``."""
    X, y = get_data()
    model = get_model()
    optimizer = Adam(model.parameters(), lr=1e-2)
    return epoch_stream((X, y), model, optimizer, get_loss(), batch_size=32, shuffle=True)


def model_param_norm(ev: dict[str, Any]) -> dict[str, Any]:
    model_params = nn.utils.parameters_to_vector(ev["model"].parameters())
    return {"model_param_norm": linalg.norm(model_params)}


def test_getting_started(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = get_data()
    model = get_model()
    loss = get_loss()
    optimizer = Adam(model.parameters())

    # an infinite stream of training epochs
    for event in epoch_stream((X, y), model, optimizer, loss, batch_size=32, shuffle=True):
        print(f"step={event['step']}, loss={event['train_loss']}")
        if event["step"] == 3:
            break

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["step=1", "step=2", "step=3"]
    losses = [float(line.split("loss=")[1]) for line in lines]
    assert losses[-1] < losses[0]


def test_augment_with_model_param_norm(capsys: pytest.CaptureFixture[str]) -> None:
    events = pipe(
        _stream(),
        augment(model_param_norm),
    )
    for event in events:
        print(f"step={event['step']}", f"model_param_norm={event['model_param_norm']}")
        expected = torch.cat([p.detach().flatten() for p in event["model"].parameters()]).norm()
        assert float(event["model_param_norm"].detach()) == pytest.approx(expected.item(), rel=1e-5)
        if event["step"] == 3:
            break

    assert capsys.readouterr().out.count("model_param_norm=") == 3


def test_augment_with_validation_loss(capsys: pytest.CaptureFixture[str]) -> None:
    validation_set = get_validation_set()
    events = pipe(
        _stream(),
        augment(validation_loss(validation_set, nn.CrossEntropyLoss())),
    )
    for event in events:
        print(f"step={event['step']}, val_loss={event['val_loss']}")
        X_val, y_val = validation_set
        with torch.no_grad():
            expected = nn.functional.cross_entropy(event["model"](X_val), y_val).item()
        assert event["val_loss"] == pytest.approx(expected, rel=1e-5)
        if event["step"] == 3:
            break

    assert capsys.readouterr().out.count("val_loss=") == 3


def test_augment_more_than_once() -> None:
    events = pipe(
        _stream(),
        augment(validation_loss(get_validation_set(), get_loss())),
        augment(model_param_norm),
    )
    seen = []
    for event in events:
        print(
            f"step={event['step']}",
            f"val_loss={event['val_loss']}",
            f"model_param_norm={event['model_param_norm']}",
        )
        seen.append(event)
        if event["step"] == 3:
            break

    assert [ev["step"] for ev in seen] == [1, 2, 3]
    assert all({"val_loss", "model_param_norm", "train_loss"} <= set(ev) for ev in seen)


def test_islice_selects_the_first_100_epochs() -> None:
    steps = []
    for event in islice(_stream(), 100):
        print(event)
        steps.append(event["step"])

    assert steps == list(range(1, 101))


def test_early_stop_on_validation_loss() -> None:
    events = pipe(
        _stream(),
        augment(validation_loss(get_validation_set(), get_loss())),
    )
    seen = []
    for event in early_stop(events, key="val_loss", patience=10):
        print(event)
        seen.append(event["val_loss"])

    best = seen.index(min(seen))
    assert len(seen) == best + 1 + 10  # stopped after 10 epochs without a new best
    assert len(seen) < 200


def test_collect_to_a_list() -> None:
    # collect 100 epochs to a list
    events = islice(_stream(), 100)
    history = collect(events)

    assert [ev["step"] for ev in history] == list(range(1, 101))
    assert all("model" not in ev for ev in history)
    assert all(isinstance(ev["train_loss"], float) for ev in history)


def test_collect_jsonl_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    # collect 100 epochs to json
    events = islice(_stream(), 100)
    collect_jsonl(events, "runs/my_experiment.jsonl")

    lines = (tmp_path / "runs" / "my_experiment.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["step"] for row in rows] == list(range(1, 101))
    assert all(set(row) == {"step", "train_loss", "train_time_sec", "lr"} for row in rows)
