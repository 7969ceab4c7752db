"""The step options on CUDA: float16 with the managed GradScaler, bf16, and cuda_graphs refusals.

Skipped without CUDA. Run on a GPU machine with ``uv run pytest -q -m gpu``.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import checkpoint, ensemble_stream, epoch_stream, pipe, resume, take, tap
from fitstream._internal.source_state import attached

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    X = torch.randn(96, 8, generator=g)
    return X.cuda(), (X[:, 0] > 0).long().cuda()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).cuda()


def _new_scaler() -> Any:
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def test_float16_trains_as_the_hand_loop_with_a_grad_scaler() -> None:
    X, y = _data()
    hand, mine = _model(), _model()
    opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    scaler = _new_scaler()
    expected = []
    for _ in range(3):
        total = 0.0
        for start in range(0, 96, 32):
            xb, yb = X[start : start + 32], y[start : start + 32]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(hand(xb), yb)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(hand.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(xb)
        expected.append(total / 96)
    mine_opt = torch.optim.SGD(mine.parameters(), lr=0.1)
    events = epoch_stream(
        (X, y), mine, mine_opt, nn.CrossEntropyLoss(), batch_size=32, shuffle=False,
        autocast=torch.float16, clip_grad_norm=1.0,
    )  # fmt: skip
    got = [ev["train_loss"] for ev in islice(events, 3)]
    assert got == pytest.approx(expected, rel=1e-5)
    for p, q in zip(hand.parameters(), mine.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert attached(mine_opt)["scaler"].get_scale() == scaler.get_scale()


def test_the_grad_scaler_is_saved_and_resumed(tmp_path: Path) -> None:
    X, y = _data()
    path = tmp_path / "fp16.ckpt"
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events = epoch_stream(
        (X, y), model, opt, nn.CrossEntropyLoss(), batch_size=32, autocast=torch.float16
    )
    mark = tap(lambda ev: attached(opt)["scaler"].update(new_scale=1024.0))  # a scale of its own
    list(pipe(events, mark, checkpoint(path), take(2)))
    fresh = _model(1)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    resume(path, fresh, fresh_opt)
    stream = epoch_stream(
        (X, y), fresh, fresh_opt, nn.CrossEntropyLoss(), batch_size=32, autocast=torch.float16
    )
    next(stream)
    assert attached(fresh_opt)["scaler"] is not None
    assert attached(fresh_opt)["scaler"].get_scale() == 1024.0  # continued, not restarted


def test_bfloat16_runs_on_cuda_for_one_model_and_an_ensemble() -> None:
    X, y = _data()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    event = next(
        epoch_stream(
            (X, y), model, opt, nn.CrossEntropyLoss(), batch_size=32, autocast=torch.bfloat16
        )
    )
    models = [_model(k) for k in range(2)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    together = next(
        ensemble_stream(
            (X, y), models, opts, nn.CrossEntropyLoss(), batch_size=32, autocast=torch.bfloat16
        )
    )
    assert together["train_loss"][0] == pytest.approx(event["train_loss"], rel=2e-2)


def test_float16_is_refused_for_an_ensemble() -> None:
    X, y = _data()
    models = [_model(k) for k in range(2)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(ValueError, match=r"autocast=torch\.float16 is refused for an ensemble"):
        ensemble_stream((X, y), models, opts, nn.CrossEntropyLoss(), autocast=torch.float16)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"accumulate": 2}, "accumulate"),
        ({"autocast": torch.float16}, r"autocast=torch\.float16"),
        (
            {"train_metrics": {"acc": lambda p, t: (p.argmax(-1) == t).float().mean()}},
            "train_metrics",
        ),
    ],
)
def test_cuda_graphs_refuse_the_options_naming_them(option: dict[str, Any], named: str) -> None:
    X, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        ValueError, match=f"epoch_stream: {named} is not captured in the CUDA graph"
    ):
        epoch_stream((X, y), model, opt, nn.CrossEntropyLoss(), cuda_graphs=True, **option)
    if "float16" in named:
        return  # refused for an ensemble anyway (test above)
    models = [_model(k) for k in range(2)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(ValueError, match=f"ensemble_stream: {named} is not captured"):
        ensemble_stream((X, y), models, opts, nn.CrossEntropyLoss(), cuda_graphs=True, **option)


@pytest.mark.parametrize(
    "option",
    [{"clip_grad_norm": 0.5}, {"clip_grad_value": 0.05}, {"autocast": torch.bfloat16}],
    ids=["clip-norm", "clip-value", "bf16"],
)
def test_cuda_graphs_capture_clipping_and_bfloat16_as_the_eager_step(
    option: dict[str, Any],
) -> None:
    X, y = _data()
    runs = []
    for graphs in (False, True):
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        events = epoch_stream(
            (X, y), model, opt, nn.CrossEntropyLoss(), batch_size=32, shuffle=False,
            cuda_graphs=graphs, **option,
        )  # fmt: skip
        runs.append(([ev["train_loss"] for ev in islice(events, 3)], model))
    (eager, m_eager), (graphed, m_graphed) = runs
    assert graphed == pytest.approx(eager, rel=1e-4)
    for p, q in zip(m_eager.parameters(), m_graphed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    members = []
    for graphs in (False, True):
        models = [_model(k) for k in range(2)]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
        events = ensemble_stream(
            (X, y), models, opts, nn.CrossEntropyLoss(), batch_size=32, shuffle=False,
            cuda_graphs=graphs, **option,
        )  # fmt: skip
        members.append([ev["train_loss"] for ev in islice(events, 3)])
    for got, expected in zip(members[1], members[0], strict=True):
        assert got == pytest.approx(expected, rel=1e-4)


def test_cuda_graphs_refuse_a_per_step_scheduler() -> None:
    X, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.5, 100)
    with pytest.raises(ValueError, match="epoch_stream: schedulers is not captured"):
        epoch_stream((X, y), model, opt, nn.CrossEntropyLoss(), cuda_graphs=True, schedulers=sched)
