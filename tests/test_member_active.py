"""A frozen member is said to be stopped: ``active`` in events, frames, records and TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import collect, ensemble_stream, log_tensorboard, pipe, take, tap

pd = pytest.importorskip("pandas")
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _stream() -> Any:
    torch.manual_seed(0)
    X, y = torch.randn(32, 3), torch.randn(32, 1)
    models = [nn.Linear(3, 1) for _ in range(3)]
    rates = (0.1, 0.01, 1e-3)
    optimizers = [
        torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, rates, strict=True)
    ]
    return ensemble_stream((X, y), models, optimizers, nn.functional.mse_loss, batch_size=8)


def _freeze_member_1_at_step_2(event: dict[str, Any]) -> None:
    if event["step"] == 2:
        event["model"].freeze(1)


def test_events_say_which_members_trained_in_their_epoch() -> None:
    seen = []
    for event in pipe(_stream(), tap(_freeze_member_1_at_step_2), take(4)):
        seen.append((event["step"], list(event["active"])))
    # Frozen while the consumer held step 2: step 2 was trained, steps 3 and 4 were not.
    assert seen == [
        (1, [True, True, True]),
        (2, [True, True, True]),
        (3, [True, False, True]),
        (4, [True, False, True]),
    ]


def test_collect_pd_has_an_active_column_and_records_keep_the_list() -> None:
    from fitstream import collect_pd

    frame = collect_pd(pipe(_stream(), tap(_freeze_member_1_at_step_2), take(4)))
    assert frame[frame.member == 1].active.tolist() == [True, True, False, False]
    assert frame[frame.member != 1].active.all()
    stopped_at = frame[frame.active].groupby("member").step.max()
    assert stopped_at.tolist() == [4, 2, 4]
    records = collect(pipe(_stream(), tap(_freeze_member_1_at_step_2), take(3)))
    assert [r["active"] for r in records][-1] == [True, False, True]


def test_tensorboard_stops_writing_a_member_once_it_is_frozen(tmp_path: Path) -> None:
    events = pipe(_stream(), tap(_freeze_member_1_at_step_2), log_tensorboard(tmp_path), take(5))
    for _ in events:
        pass

    def steps(folder: str) -> list[int]:
        run = EventAccumulator(str(tmp_path / folder / "train"))
        run.Reload()
        return [e.step for e in run.Scalars("epoch/loss")]

    assert steps("lr=0.1") == [1, 2, 3, 4, 5]
    assert steps("lr=0.01") == [1, 2]  # member 1: no flat line after it stopped
    assert steps("lr=0.001") == [1, 2, 3, 4, 5]
