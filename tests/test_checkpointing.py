"""checkpoint and resume: a run stopped and resumed gives the very events of a run never stopped."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
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
    epoch_stream,
    pipe,
    reduce_lr_on_plateau,
    resume,
    take,
    validation_loss,
)
from fitstream.stages._stateful import StatefulStage

torch.manual_seed(123)
X, X_VAL = torch.randn(60, 3), torch.randn(20, 3)
Y, Y_VAL = X @ torch.ones(3, 1), X_VAL @ torch.ones(3, 1)
# best at step 3, then no improvement: early_stop(patience=5) ends the run after step 8
SCORES = {1: 5.0, 2: 4.0, 3: 3.0, 4: 3.5, 5: 3.2, 6: 3.1, 7: 3.3, 8: 3.4, 9: 1.0, 10: 1.0}


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def _objects(
    seed: int, device: str = "cpu"
) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator]:
    torch.manual_seed(seed)
    random.seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    model = model.to(device)  # on CUDA, dropout draws from the CUDA generator
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, optimizer, torch.Generator(device=device).manual_seed(seed + 1)


def _stages() -> list[Any]:
    return [
        ema("val_loss", decay=0.7),
        best_model("val_loss"),
        reduce_lr_on_plateau("score", patience=0, factor=0.5, mode="min"),
        early_stop(key="score", patience=5, mode="min"),
    ]


def _pipeline(
    objects: tuple[nn.Module, torch.optim.Optimizer, torch.Generator],
    stages: Sequence[Any],
    path: Path,
    *,
    epochs: int,
    offset: int = 0,
) -> Iterator[dict[str, Any]]:
    model, optimizer, generator = objects
    smooth, best, plateau, stop = stages
    device = generator.device
    val = (X_VAL.to(device), Y_VAL.to(device))
    return pipe(
        epoch_stream(
            (X.to(device), Y.to(device)),
            model,
            optimizer,
            nn.MSELoss(),
            batch_size=8,
            generator=generator,
            step_offset=offset,
        ),
        augment(validation_loss(val, nn.MSELoss())),
        augment(lambda ev: {"score": SCORES[ev["step"]]}),
        smooth,
        best,
        plateau,
        # the consumer's own random draws continue exactly too
        augment(lambda ev: {"torch_draw": torch.rand(()).item(), "py_draw": random.random()}),
        checkpoint(path, every=3, stages=stages, generator=generator),
        stop,
        take(epochs),
    )


def _facts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in ev.items() if k not in {"model", "optimizer", "train_time_sec"}}
        for ev in events
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_four_epochs_then_resume_gives_the_events_of_one_straight_run(
    tmp_path: Path, device: str
) -> None:
    objects = _objects(seed=0, device=device)
    stages = _stages()
    straight = _facts(list(_pipeline(objects, stages, tmp_path / "a.ckpt", epochs=10)))
    best_straight = stages[1]
    assert [ev["step"] for ev in straight] == [1, 2, 3, 4, 5, 6, 7, 8]  # early_stop fired
    assert len({ev["lr"] for ev in straight}) > 2  # the plateau stage changed the rate

    path = tmp_path / "b.ckpt"
    first = _facts(list(_pipeline(_objects(seed=0, device=device), _stages(), path, epochs=4)))

    # a new process: new objects, other random states
    objects = _objects(seed=99, device=device)
    random.seed(99)
    stages = _stages()
    start = resume(path, objects[0], objects[1], stages=stages, generator=objects[2])
    assert start == 4
    rest = _facts(list(_pipeline(objects, stages, path, epochs=6, offset=start)))

    assert first + rest == straight  # every loss, lr, ema value, draw: exactly equal
    best = stages[1]
    assert (best.best_step, best.best_value) == (best_straight.best_step, best_straight.best_value)
    assert all(torch.equal(best.state_dict[k], v) for k, v in best_straight.state_dict.items())


def test_without_the_stages_state_the_resumed_run_decides_differently(tmp_path: Path) -> None:
    straight = _facts(list(_pipeline(_objects(0), _stages(), tmp_path / "a.ckpt", epochs=10)))
    path = tmp_path / "b.ckpt"
    first = _facts(list(_pipeline(_objects(0), _stages(), path, epochs=4)))
    objects = _objects(seed=0)
    start = resume(path, objects[0], objects[1], generator=objects[2], stages=_stages())
    fresh = _stages()  # not restored: early_stop and the plateau count start again
    rest = _facts(list(_pipeline(objects, fresh, path, epochs=6, offset=start)))
    assert first + rest != straight
    assert len(first + rest) == 10


class _Stop(Exception):
    pass


def test_written_every_n_events_and_at_close_between_two_epochs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "run.ckpt"  # missing folders are created
    model, optimizer, _ = _objects(0)
    stream = pipe(
        epoch_stream((X, Y), model, optimizer, nn.MSELoss(), batch_size=8),
        checkpoint(path, every=3),
    )
    steps = []
    for event in stream:
        steps.append(resume(path) if path.exists() else None)
        if event["step"] == 4:
            weights = {k: v.clone() for k, v in model.state_dict().items()}
            break
    # written when the event after a saved one was asked for: after 3 only when 4 was pulled
    assert steps == [None, None, None, 3]
    stream.close()  # closed while holding event 4: it is saved
    fresh = _objects(5)[0]
    assert resume(path, fresh) == 4
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in weights.items())
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.ckpt"]  # no temporary left


def test_a_crash_inside_an_epoch_leaves_the_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model, optimizer, _ = _objects(0)
    calls = 0

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 8 * 2 + 3:  # in the middle of epoch 3 (8 batches per epoch)
            raise _Stop
        return nn.functional.mse_loss(pred, target)

    with pytest.raises(_Stop):
        list(pipe(epoch_stream((X, Y), model, optimizer, loss_fn, batch_size=8), checkpoint(path)))
    assert resume(path) == 2  # not the half-trained epoch 3


def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.ckpt"
    model, optimizer, _ = _objects(0)
    stream = pipe(epoch_stream((X, Y), model, optimizer, nn.MSELoss()), checkpoint(path))
    next(stream)
    next(stream)  # step 1 written
    real_save = torch.save

    def broken_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        next(stream)
    monkeypatch.setattr(torch, "save", real_save)
    assert resume(path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]


def test_an_ensembles_members_and_optimizers_are_saved_and_restored(tmp_path: Path) -> None:
    from tests.test_control import FakeEnsemble

    ensemble = FakeEnsemble(2)
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.1) for m in ensemble.members]
    event = {"step": 7, "model": ensemble, "optimizer": optimizers}
    list(checkpoint([event], tmp_path / "e.ckpt"))
    members = [nn.Linear(1, 1), nn.Linear(1, 1)]
    fresh = [torch.optim.Adam(m.parameters(), lr=0.5) for m in members]
    assert resume(tmp_path / "e.ckpt", members, fresh) == 7
    assert all(
        torch.equal(a.weight, b.weight) for a, b in zip(members, ensemble.members, strict=True)
    )
    assert [o.param_groups[0]["lr"] for o in fresh] == [0.1, 0.1]
    with pytest.raises(ValueError, match=r"holds 2 ensemble members; pass 'model' as the list"):
        resume(tmp_path / "e.ckpt", nn.Linear(1, 1))


def test_resume_refuses_files_and_stages_that_do_not_match(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model, optimizer, _ = _objects(0)
    stop = early_stop(key="train_loss", patience=3)
    source = epoch_stream((X, Y), model, optimizer, nn.MSELoss())
    list(pipe(source, checkpoint(path, stages=[stop]), stop, take(1)))
    with pytest.raises(
        ValueError, match=r"holds the stages \['early_stop'\] but 'stages' has \[\]"
    ):
        resume(path)
    with pytest.raises(ValueError, match=r"\['early_stop'\] but 'stages' has \['ema'\]"):
        resume(path, stages=[ema("x", decay=0.5)])
    with pytest.raises(ValueError, match=r"holds 1 optimizer states but 2 optimizers were given"):
        resume(path, model, [optimizer, optimizer], stages=[stop])
    with pytest.raises(FileNotFoundError):
        resume(tmp_path / "missing.ckpt")
    assert resume(tmp_path / "missing.ckpt", model, missing_ok=True) == 0
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"was not written by fitstream.checkpoint"):
        resume(tmp_path / "other.pt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a FitStream checkpoint: torch.load cannot"):
        resume(tmp_path / "junk.ckpt")
    (tmp_path / "random.ckpt").write_bytes(bytes(range(256)) * 4)  # pickle-like noise
    with pytest.raises(ValueError, match=r"is not a FitStream checkpoint") as refused:
        resume(tmp_path / "random.ckpt")
    assert "weights_only" not in str(refused.value)  # never advise an unsafe load


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: checkpoint(3), TypeError, r"checkpoint: 'path' must be a file path"),
        (lambda: checkpoint("p", every=0), ValueError, r"'every' must be a positive int, got 0"),
        (lambda: checkpoint("p", stages=[print]), TypeError, r"stages\[0\] has no get_state"),
        (lambda: checkpoint("p", stages="ema"), TypeError, r"'stages' must be a list of state"),
        (lambda: checkpoint("p", generator=1), TypeError, r"'generator' must be the torch.Gen"),
        (lambda: checkpoint("p", model=3), TypeError, r"'model' must be an nn.Module or None"),
        (lambda: resume(None), TypeError, r"resume: 'path' must be a file path"),
    ],
)
def test_checkpoint_and_resume_refuse_bad_arguments_at_the_call(
    call: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


def test_checkpoint_is_lazy_and_closes_its_source(counting_source: Any, tmp_path: Path) -> None:
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    source = counting_source(fields=lambda i: {"model": model, "optimizer": opt})
    events = pipe(source, checkpoint(tmp_path / "c.ckpt"), take(2))
    assert source.pulled == 0
    assert [ev["step"] for ev in events] == [1, 2]
    assert (source.pulled, source.closed) == (2, True)


def test_a_stateful_stage_checks_the_state_it_is_given() -> None:
    stage = early_stop(key="val_loss", patience=2)
    assert isinstance(stage, StatefulStage)
    fresh = {"members": None, "best": [], "stale": [], "seen": [], "stopped": []}
    assert stage.get_state() == fresh
    with pytest.raises(ValueError, match=r"early_stop: set_state needs the keys"):
        stage.set_state({"average": 0.0, "weight": 1.0})
    with pytest.raises(TypeError, match=r"early_stop: set_state needs the dict get_state"):
        stage.set_state([1, 2])  # type: ignore[arg-type]
    stage.set_state(
        {"members": None, "best": [1.0], "stale": [1], "seen": [True], "stopped": [False]}
    )
    events = [{"val_loss": 2.0}, {"val_loss": 2.0}]
    assert len(list(stage(events))) == 1  # continued: one more stale event ends it
    assert len(list(stage(events))) == 2  # the restored state is used by one pass only
    best = best_model("val_loss")
    with pytest.raises(ValueError, match=r"best_model: set_state needs the dict get_state"):
        best.set_state({"x": 1})


@pytest.mark.parametrize(
    "make",
    [lambda: early_stop(key="val_loss", patience=2), lambda: ema("val_loss", decay=0.5)],
    ids=["early_stop", "ema"],
)
def test_per_member_progress_is_saved_and_continued(make: Any) -> None:
    values = [[3.0, 1.0], [2.0, 1.0], [2.5, 1.5], [2.6, 0.5], [2.7, 0.4], [1.0, 0.3]]
    events = [{"step": i, "val_loss": v} for i, v in enumerate(values, 1)]
    straight = list(make()(events))
    first_stage = make()
    first = list(take(first_stage(events), 2))
    state = first_stage.get_state()
    rest_stage = make()
    rest_stage.set_state(state)
    assert first + list(rest_stage(events[2:])) == straight


@pytest.mark.parametrize(
    ("saved_kind", "given_kind", "match"),
    [
        (torch.optim.Adam, torch.optim.SGD, r"optimizer 0 is SGD, but the checkpoint's was Adam"),
        (torch.optim.SGD, torch.optim.Adam, r"optimizer 0 is Adam, but the checkpoint's was SGD"),
    ],
)
def test_a_refused_resume_changes_nothing(
    tmp_path: Path, saved_kind: Any, given_kind: Any, match: str
) -> None:
    path = tmp_path / "run.ckpt"
    model = nn.Linear(3, 1)
    extra = {"momentum": 0.9} if saved_kind is torch.optim.SGD else {}
    optimizer = saved_kind(model.parameters(), lr=0.1, **extra)
    list(take(pipe(epoch_stream((X, Y), model, optimizer, nn.MSELoss()), checkpoint(path)), 2))
    fresh = nn.Linear(3, 1)
    fresh_opt = given_kind(fresh.parameters(), lr=0.5)
    weights = {k: v.clone() for k, v in fresh.state_dict().items()}
    groups = [dict(g, params=None) for g in fresh_opt.param_groups]
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=match):
        resume(path, fresh, fresh_opt)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in weights.items())
    assert [dict(g, params=None) for g in fresh_opt.param_groups] == groups
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_successful_write_removes_temporaries_left_by_killed_writes(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    stale = tmp_path / ".run.ckpt.abc123.tmp"
    stale.write_bytes(b"half of a killed write")
    other = tmp_path / ".other.ckpt.abc123.tmp"  # another checkpoint's: not ours to remove
    other.write_bytes(b"x")
    model, optimizer, _ = _objects(0)
    list(take(pipe(epoch_stream((X, Y), model, optimizer, nn.MSELoss()), checkpoint(path)), 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.ckpt.abc123.tmp", "run.ckpt"]
