"""best_model(restore=True): the live model holds the best weights however the stream ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import best_model, early_stop, epoch_stream, pipe, take, tap

LOSSES = [0.9, 0.5, 0.2, 0.6, 0.7, 0.8, 0.9, 1.0]  # best at step 3


def _run(
    model: nn.Module, fail_at: int | None = None, interrupt_at: int | None = None
) -> Iterator[dict[str, Any]]:
    """Epoch i sets the bias to i; raises RuntimeError/KeyboardInterrupt in the given epoch."""
    for step, loss in enumerate(LOSSES, start=1):
        if step == fail_at:
            raise RuntimeError("training failed")
        if step == interrupt_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            model.bias.fill_(step)
        yield {"step": step, "model": model, "val_loss": loss}


def _bias(model: nn.Linear) -> float:
    return float(model.bias.item())


def _consume(events: Iterator[dict[str, Any]]) -> None:
    for _ in events:
        pass


def test_restored_when_take_ends_the_stream() -> None:
    model = nn.Linear(1, 1)
    steps = [ev["step"] for ev in pipe(_run(model), best_model("val_loss", restore=True), take(5))]
    assert steps == [1, 2, 3, 4, 5]
    assert _bias(model) == 3.0


def test_restored_when_early_stop_ends_the_stream() -> None:
    model = nn.Linear(1, 1)
    events = pipe(
        _run(model), best_model("val_loss", restore=True), early_stop(key="val_loss", patience=2)
    )
    assert [ev["step"] for ev in events] == [1, 2, 3, 4, 5]
    assert _bias(model) == 3.0


def test_restored_when_the_source_runs_out() -> None:
    model = nn.Linear(1, 1)
    _consume(pipe(_run(model), best_model("val_loss", restore=True)))
    assert _bias(model) == 3.0


def test_restored_when_a_later_stage_raises() -> None:
    model = nn.Linear(1, 1)

    def fail_at_5(event: dict[str, Any]) -> None:
        if event["step"] == 5:
            raise ValueError("a later stage failed")

    events = pipe(_run(model), best_model("val_loss", restore=True), tap(fail_at_5))
    with pytest.raises(ValueError, match="a later stage failed"):
        _consume(events)
    assert _bias(model) == 3.0


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_restored_when_training_raises(error: type[BaseException]) -> None:
    model = nn.Linear(1, 1)
    source = _run(model, fail_at=6) if error is RuntimeError else _run(model, interrupt_at=6)
    with pytest.raises(error):
        _consume(pipe(source, best_model("val_loss", restore=True)))
    assert _bias(model) == 3.0


def test_restored_on_close_after_ctrl_c_in_the_consumers_loop() -> None:
    model = nn.Linear(1, 1)
    events = pipe(_run(model), best_model("val_loss", restore=True))

    def interrupted_at_5() -> None:
        for event in events:
            if event["step"] == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_at_5()
    assert _bias(model) == 5.0  # the stream is only paused: the consumer may still resume it
    events.close()
    assert _bias(model) == 3.0


def test_restored_when_the_stream_is_garbage_collected() -> None:
    model = nn.Linear(1, 1)
    events = pipe(_run(model), best_model("val_loss", restore=True))
    for event in events:
        if event["step"] == 4:
            break
    assert _bias(model) == 4.0
    del events, event
    gc.collect()
    assert _bias(model) == 3.0


def test_restored_on_a_real_epoch_stream() -> None:
    X, y = torch.randn(32, 2), torch.randn(32, 1)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = iter([0.9, 0.1, 0.5, 0.6])
    snapshots: list[dict[str, torch.Tensor]] = []
    best = best_model("val_loss", restore=True)
    events = pipe(
        epoch_stream((X, y), model, opt, nn.MSELoss(), batch_size=8),
        lambda evs: ({**ev, "val_loss": next(losses)} for ev in evs),
        tap(lambda ev: snapshots.append({k: v.clone() for k, v in model.state_dict().items()})),
        best,
        take(4),
    )
    _consume(events)
    assert best.best_step == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[1].items())
    assert not torch.equal(snapshots[1]["weight"], snapshots[3]["weight"])


def test_without_restore_the_stage_tracks_but_leaves_the_model() -> None:
    model = nn.Linear(1, 1)
    best = best_model("val_loss")
    _consume(pipe(_run(model), best, take(5)))
    assert (best.best_step, _bias(model)) == (3, 5.0)


def test_nothing_is_restored_before_any_snapshot() -> None:
    model = nn.Linear(1, 1)
    events = ({"step": i, "model": model, "val_loss": float("nan")} for i in range(3))
    with torch.no_grad():
        model.bias.fill_(7.0)
    _consume(pipe(events, best_model("val_loss", restore=True)))
    assert _bias(model) == 7.0


def test_a_restoring_tracker_refuses_single_events_and_non_streams() -> None:
    best = best_model("val_loss", restore=True)
    with pytest.raises(TypeError, match=r"restore=True .*pipe\(events, \.\.\., best\), not in tap"):
        best({"step": 1, "model": nn.Linear(1, 1), "val_loss": 0.1})
    with pytest.raises(TypeError, match=r"best_model: 'events' must be an iterable of event dicts"):
        best(3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"best_model: 'restore' must be True or False, got str"):
        best_model("val_loss", restore="yes")  # type: ignore[arg-type]


def test_the_stage_is_lazy_and_closes_its_source(counting_source: Any) -> None:
    model = nn.Linear(1, 1)
    source = counting_source(fields=lambda i: {"model": model, "val_loss": 1.0 / i})
    events = pipe(source, best_model("val_loss", restore=True), take(2))
    assert source.pulled == 0
    _consume(events)
    assert (source.pulled, source.closed) == (2, True)


def test_each_member_of_an_ensemble_gets_its_own_best_weights_back() -> None:
    from tests.test_control import FakeEnsemble

    ensemble = FakeEnsemble(2)
    losses = [[0.9, 0.5], [0.2, 0.6], [0.4, 0.7], [0.3, 0.8]]  # best: member 0 at 2, 1 at 1

    def trained() -> Iterator[dict[str, Any]]:
        for step, values in enumerate(losses, start=1):
            for member in ensemble.members:
                with torch.no_grad():
                    member.bias.fill_(step)
            yield {"step": step, "model": ensemble, "val_loss": values}

    best = best_model("val_loss", restore=True)
    _consume(pipe(trained(), best, take(4)))
    assert best.best_step == [2, 1]
    assert [_bias(m) for m in ensemble.members] == [2.0, 1.0]  # type: ignore[arg-type]
