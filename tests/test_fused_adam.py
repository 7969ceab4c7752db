"""The ensemble's Adam through ``torch._fused_adam_`` on the CPU (sources/ensemble/adam.py).

Where every member shares betas and eps and none uses L2 decay, amsgrad or maximize, a slab's
step is one fused pass; it trains as the separate passes do, and anything else takes them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import ensemble_stream
from fitstream.sources.ensemble import adam as adam_module

pytestmark = pytest.mark.skipif(
    not adam_module.fused_on_cpu(), reason="this torch has no fused Adam for CPU tensors (< 2.4)"
)

Make = Callable[[Any, int], torch.optim.Optimizer]


def _train(
    make: Make, *, fused: bool, monkeypatch: pytest.MonkeyPatch, ahead: int = 0, **kwargs: Any
) -> Any:
    """Four members trained 4 epochs; member 0's optimizer ``ahead`` steps ahead of the rest."""
    calls: list[int] = []  # the tensors per list of each kernel call
    real = torch._fused_adam_

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(len(args[0]))
        return real(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "_fused_adam_", counted)
        if not fused:
            patch.setattr(adam_module, "fused_on_cpu", lambda: False)
        torch.manual_seed(0)
        models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(4)]
        opts = [make(m.parameters(), k) for k, m in enumerate(models)]
        g = torch.Generator().manual_seed(1)
        X = torch.randn(50, 4, generator=g)
        y = torch.randint(0, 3, (50,), generator=g)
        for _ in range(ahead):
            opts[0].zero_grad()
            nn.functional.cross_entropy(models[0](X), y).backward()
            opts[0].step()
        stream = ensemble_stream((X, y), models, opts, nn.CrossEntropyLoss(), batch_size=8,
                                 generator=torch.Generator().manual_seed(2), **kwargs)  # fmt: skip
        losses = [event["train_loss"] for event in islice(stream, 4)]
    return losses, models, calls


FUSABLE: dict[str, Make] = {
    "adam, own rates": lambda p, k: torch.optim.Adam(p, lr=0.003 * (k + 1)),
    "adamw, own decays": lambda p, k: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1 * k),
    "adam and adamw": lambda p, k: (torch.optim.Adam if k % 2 else torch.optim.AdamW)(p, lr=0.01),
}


@pytest.mark.parametrize("rows", [False, True], ids=["shared-rows", "own-rows"])
@pytest.mark.parametrize("name", list(FUSABLE))
def test_the_fused_step_trains_as_the_separate_passes(
    monkeypatch: pytest.MonkeyPatch, name: str, rows: bool
) -> None:
    extra = {"rows": [torch.arange(50)[k % 3 :: 2] for k in range(4)]} if rows else {}
    fused, models, calls = _train(FUSABLE[name], fused=True, monkeypatch=monkeypatch, **extra)
    # members at the same step: the slab whole; with rows of unequal sizes the members fall
    # out of step after the first epoch (the short ones skip the last step), then one row each
    assert set(calls) == ({1, 4} if rows else {1})
    plain, others, none = _train(FUSABLE[name], fused=False, monkeypatch=monkeypatch, **extra)
    assert not none
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-5, atol=1e-7)
    for a, b in zip(models, others, strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


NOT_FUSABLE: dict[str, Make] = {
    "l2 decay": lambda p, k: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "amsgrad": lambda p, k: torch.optim.Adam(p, lr=0.01, amsgrad=k == 0),
    "maximize": lambda p, k: torch.optim.Adam(p, lr=0.01, maximize=k == 0),
    "betas differ": lambda p, k: torch.optim.Adam(p, lr=0.01, betas=(0.9 - 0.05 * k, 0.999)),
    "eps differs": lambda p, k: torch.optim.Adam(p, lr=0.01, eps=10.0 ** -(6 + k)),
}


@pytest.mark.parametrize("name", list(NOT_FUSABLE))
def test_members_that_differ_in_what_the_kernel_shares_take_the_separate_passes(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    losses, _, calls = _train(NOT_FUSABLE[name], fused=True, monkeypatch=monkeypatch)
    assert not calls
    assert torch.tensor(losses).isfinite().all()  # trained


@pytest.mark.parametrize("name", list(FUSABLE))
def test_members_at_different_steps_take_their_own_rows_and_train_as_the_separate_passes(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fused, models, calls = _train(FUSABLE[name], fused=True, monkeypatch=monkeypatch, ahead=3)
    assert calls
    assert set(calls) == {4}  # one row per member, each with its own step number
    plain, others, _ = _train(FUSABLE[name], fused=False, monkeypatch=monkeypatch, ahead=3)
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-5, atol=1e-7)
    for a, b in zip(models, others, strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
