"""resumable: one stage continues a run from its checkpoint, exactly as if it never stopped."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    best_model,
    checkpoint,
    early_stop,
    ema,
    ensemble_stream,
    epoch_stream,
    pipe,
    reduce_lr_on_plateau,
    resumable,
    resume,
    validation_loss,
)

torch.manual_seed(7)
X, X_VAL = torch.randn(60, 3), torch.randn(20, 3)
Y, Y_VAL = X @ torch.ones(3, 1), X_VAL @ torch.ones(3, 1)
SCORES = {1: 5.0, 2: 4.0, 3: 3.0, 4: 3.5, 5: 3.2, 6: 3.1, 7: 2.0, 8: 3.4, 9: 3.3, 10: 3.6}


class Session:
    """What one process builds: fresh objects, seeded as that process happens to be."""

    def __init__(self, seed: int, path: Path, *, epochs: int = 10, every: int = 1) -> None:
        torch.manual_seed(seed)
        random.seed(seed)
        self.model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.best = best_model("val_loss")
        self.stages = [
            ema("val_loss", decay=0.7),
            self.best,
            reduce_lr_on_plateau("score", patience=0, factor=0.5, mode="min"),
            early_stop(key="score", patience=50, mode="min"),
        ]
        self.path, self.epochs, self.every = path, epochs, every

    def events(self) -> Iterator[dict[str, Any]]:
        smooth, best, plateau, stop = self.stages
        return pipe(
            # no generator of its own: the shuffles draw from torch's, which is saved
            epoch_stream((X, Y), self.model, self.optimizer, nn.MSELoss(), batch_size=8),
            resumable(
                self.path,
                self.model,
                self.optimizer,
                epochs=self.epochs,
                stages=self.stages,
                every=self.every,
            ),
            augment(validation_loss((X_VAL, Y_VAL), nn.MSELoss())),
            augment(lambda ev: {"score": SCORES[ev["step"]]}),
            smooth,
            best,
            plateau,
            augment(lambda ev: {"draw": torch.rand(()).item(), "py": random.random()}),
            stop,
        )


def _facts(events: Iterator[dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    out = []
    for event in events:
        out.append(
            {k: v for k, v in event.items() if k not in {"model", "optimizer", "train_time_sec"}}
        )
        if limit is not None and len(out) == limit:
            break
    return out


def test_four_epochs_then_a_restart_gives_the_events_of_one_straight_run(tmp_path: Path) -> None:
    straight_session = Session(0, tmp_path / "straight.ckpt")
    straight = _facts(straight_session.events())
    assert [ev["step"] for ev in straight] == list(range(1, 11))  # epochs=10 ends the run
    assert len({ev["lr"] for ev in straight}) > 2  # the plateau stage changed the rate

    path = tmp_path / "run.ckpt"
    first = _facts(Session(0, path).events(), limit=4)  # the process is stopped here
    assert resume(path, stages=Session(1, path).stages) == 4  # the file is checkpoint's own

    restarted = Session(99, path)  # a new process: new objects, other random states
    rest = _facts(restarted.events())  # the very same script, run again
    assert [ev["step"] for ev in rest] == [5, 6, 7, 8, 9, 10]
    assert first + rest == straight  # every loss, lr, ema value, random draw
    best, best_straight = restarted.best, straight_session.best
    assert (best.best_step, best.best_value) == (best_straight.best_step, best_straight.best_value)
    assert all(
        torch.equal(restarted.model.state_dict()[k], v)
        for k, v in straight_session.model.state_dict().items()
    )


def test_a_finished_run_started_again_trains_nothing(tmp_path: Path, counting_source: Any) -> None:
    path = tmp_path / "run.ckpt"
    done = Session(0, path, epochs=3)
    assert [ev["step"] for ev in done.events()] == [1, 2, 3]
    weights = {k: v.clone() for k, v in done.model.state_dict().items()}
    again = Session(5, path, epochs=3)
    source = counting_source()
    stream = resumable(source, path, again.model, again.optimizer, epochs=3, stages=again.stages)
    assert list(stream) == []
    assert source.pulled == 0
    assert source.closed
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in weights.items())


def test_pulls_only_the_epochs_left_and_closes_its_source(
    tmp_path: Path, counting_source: Any
) -> None:
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def run() -> tuple[list[int], Any]:
        source = counting_source(fields=lambda i: {"model": model, "optimizer": optimizer})
        events = resumable(source, tmp_path / "c.ckpt", model, optimizer, epochs=5)
        return [ev["step"] for _, ev in zip(range(2), events, strict=False)], source

    steps, source = run()
    assert (steps, source.pulled, source.closed) == ([1, 2], 2, True)
    steps, source = run()
    assert (steps, source.pulled, source.closed) == ([3, 4], 2, True)
    steps, source = run()
    assert (steps, source.pulled, source.closed) == ([5], 1, True)  # no sixth epoch pulled


def test_saves_every_n_events_and_on_the_last_when_the_source_ends(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events = [{"step": i, "model": model, "optimizer": optimizer} for i in range(1, 6)]
    seen = []
    for _ in resumable(events, path, model, optimizer, every=2):
        seen.append(resume(path) if path.exists() else None)
    assert seen == [None, None, 2, 2, 4]
    assert resume(path) == 5  # the source ended: its last event is kept too


def test_a_crash_inside_an_epoch_keeps_the_last_whole_epoch(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = 0

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 8 * 2 + 3:  # in the middle of epoch 3 (8 batches per epoch)
            raise OSError("power cut")
        return nn.functional.mse_loss(pred, target)

    source = epoch_stream((X, Y), model, optimizer, loss_fn, batch_size=8)
    with pytest.raises(OSError, match="power cut"):
        list(resumable(source, path, model, optimizer))
    assert resume(path) == 2  # not the half-trained epoch 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary file


def test_an_ensemble_continues_exactly(tmp_path: Path) -> None:
    def session(seed: int, path: Path, limit: int | None = None) -> list[dict[str, Any]]:
        torch.manual_seed(seed)
        models = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)) for _ in range(3)]
        optimizers = [
            torch.optim.Adam(m.parameters(), lr=lr)
            for m, lr in zip(models, [0.1, 0.01, 0.001], strict=True)
        ]
        stop = early_stop(key="val_loss", patience=2)
        events = pipe(
            ensemble_stream((X, Y), models, optimizers, nn.MSELoss(), batch_size=16),
            resumable(path, models, optimizers, epochs=8, stages=[stop]),
            augment(validation_loss((X_VAL, Y_VAL), nn.MSELoss())),
            stop,
        )
        weights = augment(lambda ev: {"weights": [m[0].weight.tolist() for m in models]})
        return _facts(weights(events), limit)

    straight = session(0, tmp_path / "straight.ckpt")
    first = session(0, tmp_path / "run.ckpt", limit=3)
    rest = session(42, tmp_path / "run.ckpt")
    assert first + rest == straight
    assert rest[0]["step"] == 4
    assert rest[0]["active"] == [False, True, True]  # frozen after step 3, and still frozen

    models = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)) for _ in range(3)]
    with pytest.warns(UserWarning, match=r"members \[0\] frozen, which resume cannot freeze"):
        resume(tmp_path / "run.ckpt", models, stages=[early_stop(key="val_loss", patience=2)])
    optimizers = [torch.optim.Adam(m.parameters()) for m in models]
    plain = [{"step": 1, "model": models[0]}]
    stop = early_stop(key="val_loss", patience=2)
    with pytest.raises(ValueError, match=r"not an ensemble_stream that can start with them"):
        list(resumable(plain, tmp_path / "run.ckpt", models, optimizers, stages=[stop]))


def test_reads_a_checkpoint_stage_file_and_refuses_one_that_does_not_match(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.ckpt"
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events = [{"step": i, "model": model, "optimizer": optimizer} for i in range(1, 4)]
    list(checkpoint(events, path))
    assert [ev["step"] for ev in resumable(events[:2], path, model, optimizer)] == [4, 5]
    stop = early_stop(key="val_loss", patience=3)
    with pytest.raises(ValueError, match=r"holds the stages \[\] but 'stages' has \['early_stop'"):
        list(resumable(events, path, model, optimizer, stages=[stop]))
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a FitStream checkpoint"):
        list(resumable(events, tmp_path / "junk.ckpt", model, optimizer))


def test_refuses_a_source_with_a_step_offset_and_a_lightning_stream(tmp_path: Path) -> None:
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    offset = [{"step": 5, "model": model, "optimizer": optimizer}]
    with pytest.raises(ValueError, match=r"first event has step 5, not 1; put resumable right"):
        list(resumable(offset, tmp_path / "a.ckpt", model, optimizer))
    lightning = [{"step": 1, "trainer": object()}]
    with pytest.raises(TypeError, match=r"fit_stream\(\.\.\., ckpt_path=path\)"):
        list(resumable(lightning, tmp_path / "a.ckpt", model, optimizer))
    assert not (tmp_path / "a.ckpt").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": 3}, TypeError, r"'path' must be a file path \(str or os.PathLike\), got int: 3"),
        ({"model": "net"}, TypeError, r"'model' must be the nn.Module the source trains"),
        ({"model": [nn.Linear(1, 1), 2]}, TypeError, r"model\[1\] must be an nn.Module, got"),
        ({"optimizer": None}, TypeError, r"'optimizer' must be the torch optimizer"),
        (
            {"optimizer": []},
            TypeError,
            r"'optimizer' must be the torch optimizer .* got list: \[\]",
        ),
        ({"epochs": 0}, ValueError, r"'epochs' must be a positive int, got 0"),
        ({"epochs": 2.5}, TypeError, r"'epochs' must be a positive int, got float: 2.5"),
        ({"every": 0}, ValueError, r"'every' must be a positive int, got 0"),
        ({"stages": [3]}, TypeError, r"stages\[0\] has no get_state\(\)/set_state\(\)"),
        ({"generator": 1}, TypeError, r"'generator' must be the torch.Generator"),
    ],
)
def test_refuses_bad_arguments_at_the_call(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    model = nn.Linear(1, 1)
    arguments: dict[str, Any] = {
        "path": tmp_path / "a.ckpt",
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        **kwargs,
    }
    with pytest.raises(error, match=f"^resumable: {match}"):
        resumable(**arguments)


# --- the sinks of a restarted run: one record, every step once ------------------------------


def test_one_script_for_every_start_keeps_one_record_in_jsonl_and_tensorboard(
    tmp_path: Path,
) -> None:
    """The how-to's script, killed at step 7 (its last checkpoint at 4), then run again."""
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fitstream import collect_jsonl, log_tensorboard

    def script(seed: int, path: Path, kill_after: int | None = None) -> None:
        events = pipe(
            Session(seed, path / "run.ckpt", every=4).events(), log_tensorboard(path / "tb")
        )

        def killed(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for event in events:
                if event["step"] == 5 and kill_after:  # what kill -9 leaves: step 4's save...
                    shutil.copy(path / "run.ckpt", path / "at_4.ckpt")
                yield event
                if event["step"] == kill_after:  # ... and the lines of steps 1 to 7
                    raise KeyboardInterrupt

        try:
            collect_jsonl(killed(events), path / "run.jsonl", exclude=["train_time_sec"])
        finally:
            events.close()  # type: ignore[attr-defined]  # a pipe's stream is a generator
            if kill_after is not None:  # no save on the way out: a killed process makes none
                os.replace(path / "at_4.ckpt", path / "run.ckpt")

    script(0, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        script(0, tmp_path / "restarted", kill_after=7)
    checkpoint_file = tmp_path / "restarted" / "run.ckpt"
    assert resume(checkpoint_file, stages=Session(1, checkpoint_file).stages) == 4
    assert len((tmp_path / "restarted" / "run.jsonl").read_text().splitlines()) == 7
    script(99, tmp_path / "restarted")

    def lines(path: Path) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in (path / "run.jsonl").read_text().splitlines()]

    restarted, straight = lines(tmp_path / "restarted"), lines(tmp_path / "straight")
    assert [record["step"] for record in restarted] == list(range(1, 11))  # each step once
    assert restarted == straight

    def curve(path: Path) -> list[tuple[int, float]]:
        run = EventAccumulator(str(path / "tb" / "validation"), size_guidance={"scalars": 0})
        run.Reload()
        return [(point.step, point.value) for point in run.Scalars("epoch/loss")]

    assert [step for step, _ in curve(tmp_path / "restarted")] == list(range(1, 11))
    assert curve(tmp_path / "restarted") == curve(tmp_path / "straight")
