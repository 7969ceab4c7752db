"""checkpoint/resume carry the per-step scheduler and the GradScaler: 4 + resume + 6 = 10."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    checkpoint,
    ensemble_stream,
    epoch_stream,
    pipe,
    resumable,
    resume,
    take,
    tap,
)
from fitstream._internal.source_state import attach, attached, saved_states

torch.manual_seed(7)
X = torch.randn(70, 3)
LABELS = (X[:, 0] - X[:, 1] > 0).long()
TOTAL_STEPS = 10 * 5  # ten epochs of five batches


def _run(seed: int = 0, *, scheduled: bool = True) -> tuple[nn.Module, Any, Any, torch.Generator]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, TOTAL_STEPS) if scheduled else None
    return model, opt, sched, torch.Generator().manual_seed(seed + 100)


def _stream(model: nn.Module, opt: Any, sched: Any, gen: torch.Generator, offset: int = 0) -> Any:
    return epoch_stream(
        (X, LABELS), model, opt, nn.CrossEntropyLoss(), batch_size=16, generator=gen,
        schedulers=sched, step_offset=offset,
    )  # fmt: skip


def _losses(events: Any) -> list[float]:
    return [ev["train_loss"] for ev in events]


def _straight() -> list[float]:
    return _losses(islice(_stream(*_run()), 10))


@pytest.mark.parametrize("built", ["before", "after"])
def test_four_epochs_resume_and_six_more_equal_ten_with_one_cycle(
    tmp_path: Path, built: str
) -> None:
    path = tmp_path / "run.ckpt"
    model, opt, sched, gen = _run()
    first = _losses(pipe(_stream(model, opt, sched, gen), checkpoint(path, generator=gen), take(4)))
    model, opt, sched, gen = _run(seed=1)  # other weights: the file must bring them back
    gen.manual_seed(100)
    if built == "before":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, TOTAL_STEPS)
    step = resume(path, model, opt, generator=gen)
    if built == "after":  # the scheduler, built after the resume, gets the saved state
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, TOTAL_STEPS)
    rest = _losses(islice(_stream(model, opt, sched, gen, offset=step), 6))
    assert step == 4
    assert first + rest == _straight()
    assert sched.last_epoch == TOTAL_STEPS


def test_resumable_continues_the_schedule(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model, opt, sched, gen = _run()
    stream = _stream(model, opt, sched, gen)
    first = _losses(pipe(stream, resumable(path, model, opt, epochs=10, generator=gen), take(4)))
    model, opt, sched, gen = _run()
    stream = _stream(model, opt, sched, gen)
    rest = _losses(pipe(stream, resumable(path, model, opt, epochs=10, generator=gen)))
    assert first + rest == _straight()


def test_an_ensemble_resumes_each_members_schedule(tmp_path: Path) -> None:
    path = tmp_path / "members.ckpt"

    def members() -> tuple[list[nn.Module], list[Any], list[Any]]:
        runs = [_run(seed) for seed in range(3)]
        return [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]

    def stream(models: list[nn.Module], opts: list[Any], scheds: list[Any]) -> Any:
        return ensemble_stream(
            (X, LABELS), models, opts, nn.CrossEntropyLoss(), batch_size=16, shuffle=False,
            schedulers=scheds,
        )  # fmt: skip

    straight = [ev["train_loss"] for ev in islice(stream(*members()), 10)]
    models, opts, scheds = members()
    events = pipe(stream(models, opts, scheds), checkpoint(path), take(4))
    first = [ev["train_loss"] for ev in events]
    models, opts, scheds = members()
    resume(path, models, opts)
    rest = [ev["train_loss"] for ev in islice(stream(models, opts, scheds), 6)]
    assert first + rest == straight
    assert [s.last_epoch for s in scheds] == [TOTAL_STEPS] * 3


def test_a_run_without_schedulers_saves_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    model, opt, _, gen = _run(scheduled=False)
    list(pipe(_stream(model, opt, None, gen), checkpoint(path), take(2)))
    content = torch.load(path, weights_only=True)
    assert content["source_state"] == [{"scheduler": None, "scaler": None}]
    assert resume(path, *_run(scheduled=False)[:2]) == 2


def test_a_stream_without_a_scheduler_replaces_an_earlier_streams(tmp_path: Path) -> None:
    model, opt, sched, gen = _run()
    next(_stream(model, opt, sched, gen))
    assert attached(opt)["scheduler"] is sched
    next(_stream(model, opt, None, gen))  # the same optimizer, now without a scheduler
    assert attached(opt)["scheduler"] is None


def test_a_file_from_before_0_7_without_source_state_still_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    model, opt, sched, gen = _run()
    list(pipe(_stream(model, opt, sched, gen), checkpoint(path), take(2)))
    content = torch.load(path, weights_only=True)
    del content["source_state"]
    torch.save(content, path)
    model, opt, sched, _ = _run()
    assert resume(path, model, opt) == 2
    assert attached(opt)["scheduler"] is None


@pytest.mark.skipif(
    not hasattr(getattr(torch, "amp", None), "GradScaler"), reason="torch.amp.GradScaler: 2.3+"
)
def test_a_grad_scalers_state_goes_with_its_optimizer(tmp_path: Path) -> None:
    # float16 autocast (and so the source's own scaler) needs CUDA; the saving and loading
    # are the same for any scaler attached to the optimizer, so a CPU one stands in here.
    path = tmp_path / "scaled.ckpt"
    model, opt, _, gen = _run(scheduled=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # the scale is made lazily, at the first use
    scaler.update(new_scale=256.0)
    # attached as a float16 source attaches its own (after the stream started over opt)
    stand_in = tap(lambda event: attach(opt, scaler=scaler))
    list(pipe(_stream(model, opt, None, gen), stand_in, checkpoint(path), take(1)))
    assert saved_states(opt)["scaler"]["scale"] == 256.0
    model, opt, _, _ = _run(scheduled=False)
    resume(path, model, opt)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    attach(opt, scaler=fresh)  # as the source does when it is built over the optimizer
    assert fresh.get_scale() == 256.0
