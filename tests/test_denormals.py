"""Denormal floats flushed to zero while an ensemble trains on the CPU, and only then."""

from __future__ import annotations

from itertools import islice

import pytest
import torch
from torch import nn

from fitstream import ensemble_stream
from fitstream._internal.denormals import flushed_denormals, flushing
from fitstream.sources.ensemble.adam import VectorAdam

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _plain_mode() -> None:
    torch.set_flush_denormal(False)


def test_the_block_flushes_and_the_mode_is_put_back_however_it_ends() -> None:
    with flushed_denormals(CPU):
        assert flushing()
        assert torch.tensor(1e-39).mul(1.0).item() == 0.0
    assert not flushing()
    assert torch.tensor(1e-39).mul(1.0).item() > 0
    with pytest.raises(KeyError), flushed_denormals(CPU):
        raise KeyError("inside")
    assert not flushing()


def test_the_callers_own_flushing_is_kept() -> None:
    torch.set_flush_denormal(True)
    try:
        with flushed_denormals(CPU):
            assert flushing()
        assert flushing()  # it was the caller's: still on
    finally:
        torch.set_flush_denormal(False)


def test_another_device_is_left_alone() -> None:
    with flushed_denormals(torch.device("meta")):
        assert not flushing()


def test_an_ensemble_step_runs_flushed_and_leaves_the_mode_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    real = VectorAdam.step

    def step(self: VectorAdam) -> None:
        seen.append(flushing())
        real(self)

    monkeypatch.setattr(VectorAdam, "step", step)
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(3)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    X, y = torch.randn(20, 3), torch.randn(20, 1)
    events = ensemble_stream((X, y), models, opts, nn.MSELoss(), batch_size=8)
    for _ in islice(events, 2):
        assert not flushing()  # the consumer's code runs in its own mode
    assert seen == [True] * 6
