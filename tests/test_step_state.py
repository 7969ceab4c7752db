"""The plain-PyTorch half of cuda_graphs=True: world keys, snapshots, optimizer preparation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fitstream import best_model
from fitstream.sources.graphed.snapshot import Snapshot
from fitstream.sources.graphed.step_state import (
    check_state,
    explain_capture_failure,
    make_capturable,
    needs_first_step,
    world_key,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 2) -> None:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(8, 3)).square().mean().backward()
        optimizer.step()


def _values(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    for state in optimizer.state.values():
        tensors += [v.detach().clone() for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- world_key ----------------------------------------------------------------------------


def test_world_key_is_stable_over_training_steps_and_in_place_loads() -> None:
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer)
    key = world_key(model, optimizer)
    _train(model, optimizer, steps=3)  # values change in place
    assert world_key(model, optimizer) == key
    model.load_state_dict(_net().state_dict())  # copies into the same tensors
    assert world_key(model, optimizer) == key
    best = best_model("val", mode="min")
    best({"step": 1, "model": model, "val": 0.5})
    best.load_into(model)
    assert world_key(model, optimizer) == key


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("lr", lambda m, o: o.param_groups[0].__setitem__("lr", 0.5)),
        ("weight decay", lambda m, o: o.param_groups[0].__setitem__("weight_decay", 0.1)),
        ("betas", lambda m, o: o.param_groups[0].__setitem__("betas", (0.8, 0.99))),
        (
            "optimizer load_state_dict",
            lambda m, o: o.load_state_dict(copy.deepcopy(o.state_dict())),
        ),
        (
            "state tensor replaced",
            lambda m, o: o.state[m[0].weight].update(exp_avg=torch.zeros(4, 3)),
        ),
        (
            "parameter replaced",
            lambda m, o: setattr(m[0], "weight", nn.Parameter(torch.zeros(4, 3))),
        ),
        (
            "parameter storage replaced",
            lambda m, o: setattr(m[0].weight, "data", torch.zeros(4, 3)),
        ),
        ("buffer replaced", lambda m, o: setattr(m[1], "running_mean", torch.zeros(4))),
        ("requires_grad", lambda m, o: m[0].weight.requires_grad_(False)),
        ("eval mode", lambda m, o: m[1].eval()),
        (
            "param group added",
            lambda m, o: o.add_param_group({"params": [nn.Parameter(torch.zeros(1))]}),
        ),
    ],
)
def test_world_key_changes_with_what_a_graph_cannot_see(name: str, change: object) -> None:
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer)
    key = world_key(model, optimizer)
    change(model, optimizer)  # type: ignore[operator]
    assert world_key(model, optimizer) != key, name


def test_world_key_reads_the_value_of_a_cpu_tensor_hyperparameter() -> None:
    # A CPU tensor is read on the host when the step is captured, so its value is frozen.
    model = nn.Linear(2, 1)
    lr = torch.tensor(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    key = world_key(model, optimizer)
    lr.fill_(0.2)
    assert world_key(model, optimizer) != key


# --- Snapshot -----------------------------------------------------------------------------


def test_snapshot_restores_values_into_the_same_objects_and_keeps_later_objects_out() -> None:
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer)
    state_objects = {id(v) for s in optimizer.state.values() for v in s.values()}
    before = _values(model, optimizer)
    grads = [p.grad for p in model.parameters()]
    snap = Snapshot(model, optimizer, torch.device("cpu"))
    _train(model, optimizer, steps=3)
    optimizer.param_groups[0]["lr"] = 0.5
    optimizer.param_groups[0]["capturable"] = True
    assert not _same(_values(model, optimizer), before)
    snap.restore()
    assert _same(_values(model, optimizer), before)
    assert {id(v) for s in optimizer.state.values() for v in s.values()} == state_objects
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert optimizer.param_groups[0]["capturable"] is False
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))


def test_snapshot_removes_optimizer_state_created_after_it() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot(model, optimizer, torch.device("cpu"))
    before = _values(model, optimizer)
    _train(model, optimizer)
    assert len(optimizer.state) > 0
    snap.restore()
    assert len(optimizer.state) == 0
    assert needs_first_step(optimizer)
    assert _same(_values(model, optimizer), before)


def test_snapshot_puts_back_the_original_state_objects_a_step_replaced() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    _train_linear(model, optimizer)
    step = optimizer.state[model.weight]["step"]
    snap = Snapshot(model, optimizer, torch.device("cpu"))
    optimizer.state[model.weight]["step"] = torch.tensor(99.0)
    optimizer.state[model.weight]["extra"] = 1.5
    snap.restore()
    assert optimizer.state[model.weight]["step"] is step
    assert step.item() == 1.0
    assert "extra" not in optimizer.state[model.weight]


def _train_linear(model: nn.Linear, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()


def test_snapshot_restores_the_random_generator() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot(model, optimizer, torch.device("cpu"))
    expected = torch.rand(5)
    snap.restore()
    assert torch.equal(torch.rand(5), expected)


# --- optimizer preparation ----------------------------------------------------------------


def test_make_capturable_switches_flagged_groups_and_moves_state_next_to_the_parameter() -> None:
    p = nn.Parameter(torch.zeros(2, device="meta"))
    optimizer = torch.optim.Adam([p])
    optimizer.state[p]["step"] = torch.tensor(3.0)  # a non-capturable Adam keeps it on the CPU
    assert make_capturable(optimizer) == [0]
    assert optimizer.param_groups[0]["capturable"] is True
    assert optimizer.state[p]["step"].device.type == "meta"
    assert optimizer.state[p]["step"].dtype == torch.float32
    assert make_capturable(optimizer) == []
    sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert make_capturable(sgd) == []
    assert "capturable" not in sgd.param_groups[0]


def test_check_state_accepts_tensors_on_the_parameter_device() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train_linear(model, optimizer)
    check_state(optimizer, func="epoch_stream")  # no error


def test_check_state_refuses_a_python_number() -> None:
    p = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimizer.state[p]["step"] = 4
    with pytest.raises(RuntimeError, match=r"state 'step' as a Python int \(4\).*frozen"):
        check_state(optimizer, func="epoch_stream")


def test_check_state_refuses_state_on_another_device() -> None:
    p = nn.Parameter(torch.zeros(2, device="meta"))
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimizer.state[p]["momentum_buffer"] = torch.zeros(2)
    with pytest.raises(RuntimeError, match=r"'momentum_buffer' as a tensor on cpu .* on meta"):
        check_state(optimizer, func="epoch_stream")


def test_needs_first_step_until_every_trained_parameter_has_state() -> None:
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters())
    assert needs_first_step(optimizer)
    _train_linear(model, optimizer)
    assert not needs_first_step(optimizer)  # the frozen bias never gets state, and never needs it


def test_explain_capture_failure_names_host_syncs_and_capture_errors_only() -> None:
    sync = explain_capture_failure(
        RuntimeError("called a synchronizing CUDA operation"), func="epoch_stream"
    )
    assert sync is not None
    assert ".item()" in str(sync)
    assert "cuda_graphs=False" in str(sync)
    captured = explain_capture_failure(
        RuntimeError("CUDA error: operation not permitted when stream is capturing"),
        func="epoch_stream",
    )
    assert captured is not None
    assert "operation not permitted when stream is capturing" in str(captured)
    assert explain_capture_failure(RuntimeError("mat1 and mat2 shapes"), func="f") is None
