"""StreamCallback: FitStream stages inside an unchanged trainer.fit(...)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fitstream_lightning import StreamCallback
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer.states import TrainerStatus

from fitstream import collect_jsonl, early_stop, take, tap
from fitstream.pipeline import upstream

pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated"),
]

MakeTrainer = Callable[..., Trainer]


def test_tap_sees_every_epoch_event_after_validation(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    seen: list[dict[str, Any]] = []
    module = small_module()
    trainer = make_trainer(max_epochs=3, callbacks=[StreamCallback(tap(seen.append))])
    trainer.fit(module)
    assert [ev["step"] for ev in seen] == [1, 2, 3]
    assert all(isinstance(ev["val_loss"], float) for ev in seen)
    assert seen[0]["model"] is module
    assert trainer.state.status == TrainerStatus.FINISHED


def test_take_stops_the_trainer_at_that_epoch_even_below_min_epochs(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    steps: list[int] = []
    callback = StreamCallback(take(2), tap(lambda ev: steps.append(ev["step"])))
    trainer = make_trainer(
        max_epochs=10, min_epochs=5, callbacks=[callback], logger=recording_logger
    )
    trainer.fit(small_module())
    assert steps == [1, 2]
    assert trainer.current_epoch == 2
    assert recording_logger.statuses[-1] == "success"
    assert trainer.fit_loop.min_epochs == 5  # restored


def test_early_stop_ends_fit_when_the_metric_stops_improving(
    make_trainer: MakeTrainer, small_module: Any
) -> None:
    trainer = make_trainer(
        max_epochs=10,
        callbacks=[StreamCallback(early_stop(key="epoch_hook_metric", patience=2, mode="min"))],
    )
    trainer.fit(small_module())
    assert trainer.current_epoch == 3  # best at epoch 1, no improvement at 2 and 3


def test_a_stage_that_reads_ahead_still_works_and_sinks_are_closed(
    make_trainer: MakeTrainer, tmp_path: Path
) -> None:
    def pairs(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with upstream(events) as it:
            for first in it:
                second = next(it, None)
                yield {"step": first["step"], "pair": None if second is None else second["step"]}

    path = tmp_path / "log" / "pairs.jsonl"

    def sink(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        collect_jsonl(events, path)
        yield from ()

    trainer = make_trainer(max_epochs=5, callbacks=[StreamCallback(pairs, sink)])
    trainer.fit(BoringModel())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"step": 1, "pair": 2}, {"step": 3, "pair": 4}, {"step": 5, "pair": None}]


def test_an_error_in_a_stage_fails_the_fit_with_that_error(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any, hook_recorder: Any
) -> None:
    error = ValueError("bad epoch")

    def check(ev: dict[str, Any]) -> None:
        if ev["step"] == 2:
            raise error

    trainer = make_trainer(
        callbacks=[StreamCallback(tap(check)), hook_recorder], logger=recording_logger
    )
    with pytest.raises(ValueError, match="bad epoch") as info:
        trainer.fit(small_module())
    assert info.value is error
    assert hook_recorder.exceptions == [error]
    assert trainer.current_epoch == 1
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses == ["failed"]


def test_a_stage_that_starts_a_fit_or_evaluation_on_the_same_trainer_fails_the_fit_clearly(
    make_trainer: MakeTrainer, small_module: Any, recording_logger: Any
) -> None:
    module = small_module()
    callback = StreamCallback(tap(lambda ev: ev["trainer"].validate(ev["model"])))
    trainer = make_trainer(max_epochs=3, callbacks=[callback], logger=recording_logger)
    with pytest.raises(
        RuntimeError,
        match=r"trainer\.validate\(\) cannot run now: this trainer's fit is paused while "
        r"StreamCallback's stages run; one stream or fit per Trainer at a time",
    ):
        trainer.fit(module)
    assert module.batches == 4  # refused at the first event, before any other batch
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert recording_logger.statuses == ["failed"]
    assert "validate" not in vars(trainer)
    trainer.validate(module, verbose=False)  # usable again once the fit is over


def test_a_training_error_closes_the_pipeline(make_trainer: MakeTrainer, small_module: Any) -> None:
    closed: list[str] = []

    def watcher(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            yield from events
        except BaseException as exc:
            closed.append(type(exc).__name__)
            raise

    def fail(module: Any, batch_idx: int) -> None:
        if module.current_epoch == 1:
            raise ZeroDivisionError("broken batch")

    trainer = make_trainer(callbacks=[StreamCallback(watcher)])
    with pytest.raises(ZeroDivisionError, match="broken batch"):
        trainer.fit(small_module(on_batch=fail))
    assert closed == ["StreamAborted"]


def test_does_not_change_the_default_checkpointing(make_trainer: MakeTrainer) -> None:
    with_default = make_trainer(enable_checkpointing=True, callbacks=[StreamCallback()])
    assert isinstance(with_default.checkpoint_callback, ModelCheckpoint)
    without = make_trainer(enable_checkpointing=False, callbacks=[StreamCallback()])
    assert without.checkpoint_callback is None


def test_the_same_callback_serves_a_second_fit(make_trainer: MakeTrainer) -> None:
    seen: list[int] = []
    callback = StreamCallback(tap(lambda ev: seen.append(ev["step"])))
    make_trainer(max_epochs=2, callbacks=[callback]).fit(BoringModel())
    make_trainer(max_epochs=1, callbacks=[callback]).fit(BoringModel())
    assert seen == [1, 2, 1]


def test_stages_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"stage 2 must be callable .*got int: 3"):
        StreamCallback(take(1), 3)  # type: ignore[arg-type]
