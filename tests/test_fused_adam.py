"""The ensemble's Adam through ``torch._fused_adamw_`` on the CPU (sources/ensemble/adam.py).

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

from fitstream import ensemble_stream, epoch_stream
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
    real = torch._fused_adamw_

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(len(args[0]))
        return real(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "_fused_adamw_", counted)
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


def test_a_member_that_diverged_leaves_nothing_for_the_one_that_replaces_it() -> None:
    """The kernel clears its scratch as ``x - x``, which keeps a NaN: each epoch starts zeroed.

    Member 1's weights go NaN (so do its gradients, its moments and its row of the scratch);
    the model that replaces it must train exactly as it would alone, and the others untouched.
    """

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)

    def start() -> Any:
        models = [net(k) for k in range(3)]
        opts = [torch.optim.Adam(m.parameters(), lr=0.01 * (k + 1)) for k, m in enumerate(models)]
        return models, ensemble_stream((X, y), models, opts, nn.CrossEntropyLoss(), batch_size=8,
                                       shuffle=False)  # fmt: skip

    _, plain = start()
    plain_losses = [event["train_loss"] for event in islice(plain, 5)]
    models, stream = start()
    next(stream)
    with torch.no_grad():
        for p in models[1].parameters():
            p.fill_(float("nan"))
    event = next(stream)
    assert torch.as_tensor(event["train_loss"][1]).isnan()
    newcomer = net(9)
    event["model"].replace(1, newcomer, torch.optim.Adam(newcomer.parameters(), lr=0.004))
    later = list(islice(stream, 3))
    alone = net(9)
    alone_losses = [event["train_loss"] for event in islice(
        epoch_stream((X, y), alone, torch.optim.Adam(alone.parameters(), lr=0.004),
                     nn.CrossEntropyLoss(), batch_size=8, shuffle=False), 3)]  # fmt: skip
    assert [event["train_loss"][1] for event in later] == pytest.approx(alone_losses, rel=1e-5)
    for p, q in zip(newcomer.parameters(), alone.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    for k in (0, 2):
        assert [event["train_loss"][k] for event in later] == pytest.approx(
            [losses[k] for losses in plain_losses[2:]], rel=1e-6
        )


def test_the_kernels_decay_of_one_clears_a_finite_scratch_exactly() -> None:
    """The step relies on AdamW's ``x - 1 * 1 * x``: on any finite scratch, bit for bit the
    kernel's step on a zeroed one (Adam's kernel, as the step took it before)."""
    g = torch.Generator().manual_seed(0)
    kw: dict[str, Any] = {"lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                          "amsgrad": False, "maximize": False}  # fmt: skip
    dirty = torch.randn(6, 40, generator=g) * 1e3
    clean = torch.zeros(6, 40)
    m, v = [torch.zeros(6, 40) for _ in range(2)], [torch.zeros(6, 40) for _ in range(2)]
    for step in range(1, 12):
        grad = torch.randn(6, 40, generator=g) * 10.0 ** -torch.randint(0, 6, (6, 1), generator=g)
        number = torch.tensor(float(step))
        torch._fused_adamw_([dirty], [grad], [m[0]], [v[0]], [], [number], weight_decay=1.0, **kw)
        clean.zero_()
        torch._fused_adam_([clean], [grad], [m[1]], [v[1]], [], [number], weight_decay=0.0, **kw)
        assert torch.equal(dirty, clean)
        dirty.mul_(-3.0)  # left dirty (finite) for the next step
