"""The contract every stage factory of the library keeps, checked once for all of them.

A stage is lazy (building it pulls nothing), pulls exactly one event per event it emits,
closes its source when the consumer closes or drops it, when the source is exhausted, and when
the source raises (the error reaches the consumer as the same object), and its two call forms,
``factory(stream, ...)`` and ``pipe(stream, factory(...))``, give the same events.

Each case below builds its stage so that at least three events pass through.
Stage-specific behaviour is tested in each stage's own module.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    checkpoint,
    early_stop,
    ema,
    live_plot,
    log_tensorboard,
    pipe,
    progress,
    prune,
    reduce_lr_on_plateau,
    resumable,
    stop_on_nonfinite,
    take,
    tap,
    tick,
)

matplotlib.use("Agg")


@dataclass(frozen=True)
class Case:
    """A stage factory and the arguments to build it with (``tmp_path`` -> args, kwargs)."""

    factory: Callable[..., Any]
    arguments: Callable[[Path], tuple[tuple[Any, ...], dict[str, Any]]] = field(
        default=lambda _: ((), {})
    )

    def stage(self, tmp_path: Path) -> Any:
        """``factory(*args, **kwargs)``: the stage, for ``pipe``."""
        args, kwargs = self.arguments(tmp_path)
        return self.factory(*args, **kwargs)

    def applied(self, stream: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
        """``factory(stream, *args, **kwargs)``: the stream-first call form."""
        args, kwargs = self.arguments(tmp_path)
        result: Iterator[dict[str, Any]] = self.factory(stream, *args, **kwargs)
        return result


def _no_op(*_: Any) -> None:
    return None


def _trial() -> Any:
    """A fresh trial of a study that never prunes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(pruner=optuna.pruners.NopPruner()).ask()


def _model_and_optimizer() -> dict[str, Any]:
    model = nn.Linear(1, 1)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}


CASES: dict[str, Case] = {
    "augment": Case(augment, lambda _: ((lambda ev: {"double": 2 * ev["val_loss"]},), {})),
    "take": Case(take, lambda _: ((10,), {})),
    "tap": Case(tap, lambda _: ((_no_op,), {})),
    "tap_every": Case(tap, lambda _: ((_no_op,), {"every": 2, "start": 2})),
    "tick": Case(tick, lambda _: ((_no_op,), {})),
    "ema": Case(ema, lambda _: (("val_loss",), {"decay": 0.5})),
    "early_stop": Case(early_stop, lambda _: ((), {"key": "val_loss", "patience": 5})),
    "progress": Case(progress, lambda _: (("val_loss",), {"file": io.StringIO()})),
    "log_tensorboard": Case(log_tensorboard, lambda tmp: ((), {"log_dir": tmp / "runs"})),
    "live_plot": Case(live_plot, lambda _: (("val_loss",), {"min_interval": 0})),
    "reduce_lr_on_plateau": Case(
        reduce_lr_on_plateau,
        lambda _: (("val_loss",), {"optimizer": _model_and_optimizer()["optimizer"]}),
    ),
    "stop_on_nonfinite": Case(stop_on_nonfinite, lambda _: (("val_loss",), {})),
    "prune": Case(prune, lambda _: ((_trial(), "val_loss"), {})),
    "checkpoint": Case(
        checkpoint, lambda tmp: ((tmp / "run.ckpt",), {"every": 2, **_model_and_optimizer()})
    ),
    "resumable": Case(
        resumable, lambda tmp: ((tmp / "run.ckpt",), {"every": 2, **_model_and_optimizer()})
    ),
}

every_stage = pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())


def _events(n: int) -> list[dict[str, Any]]:
    return [{"step": i, "val_loss": 1.0 / i} for i in range(1, n + 1)]


def test_every_stage_factory_of_the_library_is_covered() -> None:
    import fitstream

    wrapped = {
        name
        for name in fitstream.__all__
        if getattr(getattr(fitstream, name), "__wrapped__", None) is not None
    }
    covered = {case.factory.__name__ for case in CASES.values()}
    assert wrapped, "no stage factory found: has stage_factory stopped using functools.wraps?"
    assert wrapped <= covered, f"stage factories without a contract case: {wrapped - covered}"


@every_stage
def test_building_pulls_nothing(case: Case, counting_source: Any, tmp_path: Path) -> None:
    piped_source, direct_source = counting_source(), counting_source()
    piped = pipe(piped_source, case.stage(tmp_path))
    direct = case.applied(direct_source, tmp_path)
    assert (piped_source.pulled, direct_source.pulled) == (0, 0)
    for stream in (piped, direct):
        stream.close()  # type: ignore[attr-defined]


@every_stage
def test_pulls_exactly_one_event_per_event_emitted(
    case: Case, counting_source: Any, tmp_path: Path
) -> None:
    source = counting_source()
    stream = pipe(source, case.stage(tmp_path))
    for emitted in (1, 2, 3):
        event = next(stream)
        assert event["step"] == emitted
        assert source.pulled == emitted
    stream.close()  # type: ignore[attr-defined]
    assert source.pulled == 3


@every_stage
def test_consumer_close_closes_the_source(case: Case, counting_source: Any, tmp_path: Path) -> None:
    source = counting_source()
    stream = case.applied(source, tmp_path)
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert source.closed
    assert source.pulled == 1


@every_stage
def test_dropping_the_stream_closes_the_source(
    case: Case, counting_source: Any, tmp_path: Path
) -> None:
    source = counting_source()
    stream = pipe(source, case.stage(tmp_path))
    next(stream)
    del stream
    gc.collect()
    assert source.closed
    assert source.pulled == 1


@every_stage
def test_exhausted_source_is_closed(case: Case, counting_source: Any, tmp_path: Path) -> None:
    source = counting_source(4)
    assert [ev["step"] for ev in case.applied(source, tmp_path)] == [1, 2, 3, 4]
    assert source.closed


@every_stage
def test_source_error_reaches_the_consumer_as_the_same_object(case: Case, tmp_path: Path) -> None:
    error = RuntimeError("epoch 4 failed")
    finished: list[bool] = []

    def source() -> Iterator[dict[str, Any]]:
        try:
            yield from _events(3)
            raise error
        finally:
            finished.append(True)

    stream = pipe(source(), case.stage(tmp_path))
    assert [next(stream)["step"] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RuntimeError) as info:
        next(stream)
    assert info.value is error
    assert finished == [True]
    with pytest.raises(StopIteration):
        next(stream)


@every_stage
def test_counting_source_failure_closes_it(
    case: Case, counting_source: Any, tmp_path: Path
) -> None:
    source = counting_source(fail_at=4)
    with pytest.raises(RuntimeError, match="source failed at event 4"):
        list(case.applied(source, tmp_path))
    assert source.closed
    assert source.pulled == 3


@every_stage
def test_both_call_forms_give_the_same_events(case: Case, tmp_path: Path) -> None:
    piped = list(pipe(_events(5), case.stage(tmp_path / "piped")))
    direct = list(case.applied(_events(5), tmp_path / "direct"))
    assert len(piped) >= 3
    assert piped == direct


@every_stage
def test_incoming_events_are_left_unchanged(case: Case, tmp_path: Path) -> None:
    events = _events(3)
    list(pipe(events, case.stage(tmp_path)))
    assert events == _events(3)
