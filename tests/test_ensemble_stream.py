"""ensemble_stream: every member trains exactly as it would alone under epoch_stream."""

from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import Ensemble, Event, ensemble_stream, epoch_stream
from fitstream._internal.members import EnsembleLike, ensemble_of

OptFactory = Callable[[Any], torch.optim.Optimizer]


class Net(nn.Module):
    """The MLP of ``_mlp`` as a custom module: trained through the general vmap path."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def _mlp(seed: int, general: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    if general:
        return Net()
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _data(n: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    X = torch.randn(n, 4, generator=g)
    y = torch.stack([X[:, 0] - 2 * X[:, 1], X[:, 2] * X[:, 3]], dim=1)
    return X, y


def _alone(model: nn.Module, opt: torch.optim.Optimizer, epochs: int, **kwargs: Any) -> list[float]:
    gen = torch.Generator().manual_seed(7)
    stream = epoch_stream(_data(), model, opt, nn.MSELoss(), generator=gen, **kwargs)
    return [ev["train_loss"] for ev in islice(stream, epochs)]


def _together(
    models: list[nn.Module], opts: list[torch.optim.Optimizer], epochs: int, **kwargs: Any
) -> list[list[float]]:
    gen = torch.Generator().manual_seed(7)
    stream = ensemble_stream(_data(), models, opts, nn.MSELoss(), generator=gen, **kwargs)
    return [ev["train_loss"] for ev in islice(stream, epochs)]


SGD, Adam, AdamW = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW
SWEEPS: dict[str, list[OptFactory]] = {
    "sgd": [
        lambda p: SGD(p, lr=0.05),
        lambda p: SGD(p, lr=0.02, momentum=0.9),
        lambda p: SGD(p, lr=0.03, momentum=0.8, dampening=0.3, weight_decay=0.01),
        lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.05),
    ],
    "adam": [
        lambda p: Adam(p, lr=1e-2),
        lambda p: Adam(p, lr=3e-3, betas=(0.8, 0.99), weight_decay=0.1),
        lambda p: Adam(p, lr=5e-3, eps=1e-6, amsgrad=True),
    ],
    "adamw": [
        lambda p: AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: AdamW(p, lr=2e-3, betas=(0.85, 0.95), weight_decay=0.5),
        lambda p: AdamW(p, lr=4e-3, amsgrad=True),
    ],
    "adam+adamw": [
        lambda p: Adam(p, lr=1e-2, weight_decay=0.05),
        lambda p: AdamW(p, lr=1e-2, weight_decay=0.05),
    ],
}


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=2e-4, atol=2e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("general", [False, True], ids=["batched-matmul", "vmap"])
@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_each_member_trains_exactly_as_it_would_alone(sweep: str, general: bool) -> None:
    factories = SWEEPS[sweep]
    models = [_mlp(seed, general) for seed in range(len(factories))]
    alone = [copy.deepcopy(m) for m in models]
    opts = [make(m.parameters()) for make, m in zip(factories, models, strict=True)]
    together = _together(models, opts, epochs=4, batch_size=8)  # 37 rows: a short last batch
    for k, make in enumerate(factories):
        losses = _alone(alone[k], make(alone[k].parameters()), epochs=4, batch_size=8)
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        _assert_same_weights(models[k], alone[k])
    assert together[-1] != together[0]


def test_the_promise_holds_with_several_param_groups_and_frozen_layers() -> None:
    def make(model: nn.Module, lr: float) -> torch.optim.Optimizer:
        first, last = model[0], model[2]
        return SGD(
            [{"params": first.parameters()}, {"params": [last.weight], "lr": lr / 10}],
            lr=lr,
            momentum=0.5,
        )

    models = [_mlp(seed) for seed in range(3)]
    for m in models:
        m[2].bias.requires_grad_(False)
    alone = [copy.deepcopy(m) for m in models]
    lrs = [0.1, 0.05, 0.02]
    together = _together(
        models, [make(m, lr) for m, lr in zip(models, lrs, strict=True)], 3, batch_size=8
    )
    for k, lr in enumerate(lrs):
        bias = alone[k][2].bias.detach().clone()
        losses = _alone(alone[k], make(alone[k], lr), 3, batch_size=8)
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        _assert_same_weights(models[k], alone[k])
        assert torch.equal(models[k][2].bias, bias)


def test_events_have_the_documented_keys_and_the_ensemble() -> None:
    models = [_mlp(seed) for seed in range(3)]
    opts = [Adam(m.parameters(), lr=lr) for m, lr in zip(models, [1e-3, 1e-2, 1e-1], strict=True)]
    stream = ensemble_stream(
        _data(), models, opts, nn.MSELoss(), batch_size=8, extra={"run": "s"}, step_offset=5
    )
    events = list(islice(stream, 2))
    event = events[0]
    assert isinstance(event, Event)
    assert list(event) == [
        "step", "model", "optimizer", "train_loss", "train_time_sec", "lr", "active", "run"
    ]  # fmt: skip
    assert event["active"] == [True, True, True]
    assert event["optimizer"] == opts
    assert event["lr"] == [1e-3, 1e-2, 1e-1]  # one rate per member
    assert [ev["step"] for ev in events] == [6, 7]
    assert event["run"] == "s"
    assert type(event["train_time_sec"]) is float
    assert event["train_time_sec"] > 0
    losses = event["train_loss"]
    assert type(losses) is list
    assert len(losses) == 3
    assert all(type(v) is float for v in losses)
    ensemble = event["model"]
    assert isinstance(ensemble, Ensemble)
    assert isinstance(ensemble, nn.Module)
    assert isinstance(ensemble, EnsembleLike)
    assert ensemble_of(event) is ensemble
    assert ensemble is events[1]["model"]
    assert len(ensemble) == 3
    assert ensemble.members == tuple(models)
    assert ensemble.active == (True, True, True)
    assert ensemble.hparams[2] == {
        "optimizer": "Adam",
        "lr": 0.1,
        "weight_decay": 0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "amsgrad": False,
    }
    sgd_models = [_mlp(0), _mlp(1)]
    sgd = [
        SGD(sgd_models[0].parameters(), lr=0.1, momentum=0.9, nesterov=True),
        SGD(sgd_models[1].parameters(), lr=0.2),
    ]
    sgd_event = next(ensemble_stream(_data(), sgd_models, sgd, nn.MSELoss()))
    assert sgd_event["model"].hparams == [
        {
            "optimizer": "SGD",
            "lr": 0.1,
            "weight_decay": 0,
            "momentum": 0.9,
            "dampening": 0,
            "nesterov": True,
        },
        {
            "optimizer": "SGD",
            "lr": 0.2,
            "weight_decay": 0,
            "momentum": 0,
            "dampening": 0,
            "nesterov": False,
        },
    ]


def test_the_ensemble_forward_stacks_the_members_outputs() -> None:
    X, _ = _data()
    for general in (False, True):
        models = [_mlp(seed, general) for seed in range(3)]
        ensemble = Ensemble(models)
        out = ensemble(X)
        assert out.shape == (3, 37, 2)
        for k, model in enumerate(models):
            torch.testing.assert_close(out[k], model(X))


def test_the_batched_matmul_path_equals_the_general_path_with_gradients() -> None:
    X, y = _data()
    models = [
        nn.Sequential(
            nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.GELU(), nn.Linear(8, 2)
        )
        for _ in range(3)
    ]
    fast = Ensemble(models)
    general = Ensemble([copy.deepcopy(m) for m in models])
    general._mlp = None
    assert fast._mlp is not None
    outs = [e(X) for e in (fast, general)]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [
        torch.autograd.grad((o - y).square().sum(), list(e.parameters()))
        for o, e in zip(outs, (fast, general), strict=True)
    ]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_members_hold_the_current_weights_while_the_consumer_holds_an_event() -> None:
    X, _ = _data()
    models = [_mlp(seed) for seed in range(3)]
    opts = [SGD(m.parameters(), lr=0.1) for m in models]
    before = [p.detach().clone() for p in models[1].parameters()]
    for event in islice(ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8), 2):
        ensemble = event["model"]
        with torch.no_grad():
            stacked = ensemble(X)
        for k, model in enumerate(models):
            torch.testing.assert_close(model(X).detach(), stacked[k])
    after = list(models[1].parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # A deep copy holds one member only, not the K members its tensors view.
    clone = copy.deepcopy(models[1])
    assert sum(p.untyped_storage().nbytes() for p in clone.parameters()) == sum(
        p.numel() * p.element_size() for p in clone.parameters()
    )
    torch.testing.assert_close(clone(X), models[1](X))


def test_a_state_dict_loaded_into_a_member_reaches_training() -> None:
    models = [_mlp(seed) for seed in range(3)]
    opts = [SGD(m.parameters(), lr=0.05) for m in models]
    stream = ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8)
    first = next(stream)
    assert first["train_loss"][0] != pytest.approx(first["train_loss"][2], rel=1e-3)
    models[2].load_state_dict(models[0].state_dict())
    second = next(stream)
    assert second["train_loss"][2] == pytest.approx(second["train_loss"][0], rel=1e-6)
    for a, b in zip(models[0].parameters(), models[2].parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make", [lambda p: SGD(p, lr=0.1), lambda p: Adam(p, lr=0.01)])
def test_an_lr_changed_in_param_groups_takes_effect_at_the_next_epoch(make: OptFactory) -> None:
    models = [_mlp(seed) for seed in range(2)]
    opts = [make(m.parameters()) for m in models]
    stream = ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8)
    event = next(stream)
    opts[1].param_groups[0]["lr"] = 0.0
    assert event["model"].hparams[1]["lr"] == 0.0
    held = [[p.detach().clone() for p in m.parameters()] for m in models]
    next(stream)
    assert all(torch.equal(a, b) for a, b in zip(held[1], models[1].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(held[0], models[0].parameters(), strict=True))
    opts[1].param_groups[0]["lr"] = 0.05
    next(stream)
    assert not all(torch.equal(a, b) for a, b in zip(held[1], models[1].parameters(), strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD(p, lr=0.1, momentum=0.9),
        lambda p: Adam(p, lr=0.01),
        lambda p: torch.optim.RMSprop(p, lr=0.01),
    ],
    ids=["sgd", "adam", "fallback"],
)
@pytest.mark.filterwarnings("ignore:ensemble_stream.*slower")
def test_a_frozen_member_keeps_the_weights_of_the_held_event(make: OptFactory) -> None:
    models = [_mlp(seed) for seed in range(3)]
    alone = copy.deepcopy(models[2])
    opts = [make(m.parameters()) for m in models]
    stream = ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8, shuffle=False)
    events = [next(stream), next(stream)]
    ensemble = events[-1]["model"]
    ensemble.freeze(1)
    ensemble.freeze(1)  # idempotent
    assert ensemble.active == (True, False, True)
    held = [p.detach().clone() for p in models[1].parameters()]
    events += list(islice(stream, 3))
    for a, b in zip(held, models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    frozen_losses = [ev["train_loss"][1] for ev in events[2:]]
    assert frozen_losses == pytest.approx([frozen_losses[0]] * 3, rel=1e-6)
    X, y = _data()
    with torch.no_grad():  # the frozen member's train_loss is that of its kept weights
        assert frozen_losses[0] == pytest.approx(nn.MSELoss()(models[1](X), y).item(), rel=1e-5)
    # The other members are untouched by the freeze: member 2 still trains as it would alone.
    gen_free = epoch_stream(
        _data(), alone, make(alone.parameters()), nn.MSELoss(), batch_size=8, shuffle=False
    )
    assert [ev["train_loss"] for ev in islice(gen_free, 5)] == pytest.approx(
        [ev["train_loss"][2] for ev in events], rel=2e-4
    )


def test_freeze_refuses_a_member_that_does_not_exist() -> None:
    ensemble = Ensemble([_mlp(0), _mlp(1)])
    with pytest.raises(IndexError, match=r"Ensemble.freeze: 'member' must be in range\(2\), got 2"):
        ensemble.freeze(2)
    with pytest.raises(IndexError, match=r"got -1"):
        ensemble.freeze(-1)
    with pytest.raises(TypeError, match=r"'member' must be an int, got str"):
        ensemble.freeze("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got bool"):
        ensemble.freeze(True)
    assert ensemble.active == (True, True)


def test_dropout_draws_an_independent_mask_for_each_member() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    models = [copy.deepcopy(base) for _ in range(3)]
    X, _ = _data()
    ensemble = Ensemble(models).train()
    out = ensemble(X)
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(out[1], out[2])
    ensemble.eval()
    assert all(not m.training for m in models)
    out = ensemble(X)
    torch.testing.assert_close(out[0], out[1])
    opts = [SGD(m.parameters(), lr=0.1) for m in models]
    losses = next(ensemble_stream(_data(), models, opts, nn.MSELoss(), batch_size=8))
    assert len(set(losses["train_loss"])) == 3
    assert not torch.equal(models[0][0].weight, models[1][0].weight)


def test_nothing_trains_before_the_first_next() -> None:
    calls = []

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return nn.functional.mse_loss(pred, target)

    models = [_mlp(seed) for seed in range(2)]
    before = [p.detach().clone() for p in models[0].parameters()]
    pointers = [p.data_ptr() for p in models[0].parameters()]
    opts = [SGD(m.parameters(), lr=0.1) for m in models]
    stream = ensemble_stream(_data(), models, opts, loss_fn, batch_size=8)
    assert calls == []
    assert [p.data_ptr() for p in models[0].parameters()] == pointers  # not even restacked
    assert all(torch.equal(a, b) for a, b in zip(before, models[0].parameters(), strict=True))
    next(stream)
    assert calls  # loss_fn runs under vmap: once per batch for all members
    assert not all(torch.equal(a, b) for a, b in zip(before, models[0].parameters(), strict=True))


def test_buffers_and_several_inputs_go_through_the_general_path() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)
            self.register_buffer("scale", torch.tensor([1.0, 2.0]))

        def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * self.scale + z

    X, y = _data()
    Z = torch.randn(37, 2)
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        models.append(Scaled())
    models[1].scale.fill_(3.0)
    alone = [copy.deepcopy(m) for m in models]
    opts = [Adam(m.parameters(), lr=0.01) for m in models]
    g = torch.Generator().manual_seed(3)
    together = list(
        islice(ensemble_stream((X, Z, y), models, opts, nn.MSELoss(), batch_size=8, generator=g), 3)
    )
    for k, model in enumerate(alone):
        g = torch.Generator().manual_seed(3)
        stream = epoch_stream(
            (X, Z, y),
            model,
            Adam(model.parameters(), lr=0.01),
            nn.MSELoss(),
            batch_size=8,
            generator=g,
        )
        assert [ev["train_loss"] for ev in islice(stream, 3)] == pytest.approx(
            [ev["train_loss"][k] for ev in together], rel=2e-4
        )
    assert models[1].scale.tolist() == [3.0, 3.0]


def test_last_label_false_feeds_every_tensor_to_the_members() -> None:
    X, _ = _data()
    models = [nn.Linear(4, 1) for _ in range(2)]
    opts = [SGD(m.parameters(), lr=0.01) for m in models]
    events = ensemble_stream((X,), models, opts, lambda out: out.square().mean(), last_label=False)
    losses = [ev["train_loss"] for ev in islice(events, 5)]
    assert losses[-1][0] < losses[0][0]
    assert losses[-1][1] < losses[0][1]


@pytest.mark.parametrize(
    ("loss_fn", "labels"),
    [
        (nn.MSELoss(), torch.randn(6, 3)),
        (nn.L1Loss(), torch.randn(6, 3)),
        (nn.CrossEntropyLoss(), torch.tensor([0, 2, 1, 1, 0, 2])),
        (
            nn.CrossEntropyLoss(ignore_index=1, label_smoothing=0.1),
            torch.tensor([0, 2, 1, 1, 0, 2]),
        ),
    ],
    ids=["mse", "l1", "cross-entropy", "ignore-index-smoothing"],
)
def test_the_direct_losses_equal_loss_fn_on_each_member(loss_fn: Any, labels: Any) -> None:
    from fitstream.sources.ensemble.member_losses import member_losses

    outputs = torch.randn(4, 6, 3)
    stacked = member_losses(loss_fn, last_label=True)(outputs, labels)
    alone = torch.stack([loss_fn(outputs[k], labels) for k in range(4)])
    torch.testing.assert_close(stacked, alone)

    def wrapped(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(out, target)  # type: ignore[no-any-return]  # not recognised: vmap

    torch.testing.assert_close(member_losses(wrapped, last_label=True)(outputs, labels), alone)


def test_a_second_stream_continues_from_the_members_weights() -> None:
    models = [_mlp(seed) for seed in range(2)]
    alone = [copy.deepcopy(m) for m in models]
    opts = [SGD(m.parameters(), lr=lr) for m, lr in zip(models, [0.05, 0.02], strict=True)]
    first = _together(models, opts, epochs=2, batch_size=8)
    second = _together(models, opts, epochs=2, batch_size=8)  # restacks the members' views
    for k, lr in enumerate([0.05, 0.02]):
        model = alone[k]
        opt = SGD(model.parameters(), lr=lr)
        losses = _alone(model, opt, 2, batch_size=8) + _alone(model, opt, 2, batch_size=8)
        assert [epoch[k] for epoch in first + second] == pytest.approx(losses, rel=2e-4)
        _assert_same_weights(models[k], model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("general", [False, True], ids=["batched-matmul", "vmap"])
def test_the_promise_holds_on_cuda(general: bool) -> None:
    factories = SWEEPS["adamw"] + SWEEPS["sgd"][1:2]
    models = [_mlp(seed, general).cuda() for seed in range(len(factories))]
    alone = [copy.deepcopy(m) for m in models]
    opts = [make(m.parameters()) for make, m in zip(factories, models, strict=True)]
    data = tuple(t.cuda() for t in _data())
    gen = torch.Generator(device="cuda").manual_seed(7)
    stream = ensemble_stream(data, models, opts, nn.MSELoss(), batch_size=8, generator=gen)
    together = [ev["train_loss"] for ev in islice(stream, 3)]
    ensemble = Ensemble([_mlp(0).cuda(), _mlp(1).cuda()])
    ensemble.freeze(1)
    assert ensemble.active == (True, False)
    for k, make in enumerate(factories):
        gen = torch.Generator(device="cuda").manual_seed(7)
        solo = epoch_stream(data, alone[k], make(alone[k].parameters()), nn.MSELoss(),
                            batch_size=8, generator=gen)  # fmt: skip
        losses = [ev["train_loss"] for ev in islice(solo, 3)]
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        _assert_same_weights(models[k], alone[k])


@pytest.mark.parametrize("general", [False, True], ids=["batched-matmul", "vmap"])
@pytest.mark.parametrize("loss", ["mse", "cross-entropy", "lambda"])
def test_a_generator_per_member_gives_each_the_order_it_would_draw_alone(
    general: bool, loss: str
) -> None:
    X, y = _data()
    labels = (y[:, 0] > 0).long() if loss == "cross-entropy" else y
    loss_fn: Any = {
        "mse": nn.MSELoss(),
        "cross-entropy": nn.CrossEntropyLoss(),
        "lambda": lambda out, target: (out - target).abs().mean(),
    }[loss]
    seeds = [11, 12, 13]
    models = [_mlp(seed, general) for seed in range(3)]
    alone = [copy.deepcopy(m) for m in models]
    opts = [Adam(m.parameters(), lr=lr) for m, lr in zip(models, [1e-2, 3e-3, 1e-3], strict=True)]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    stream = ensemble_stream((X, labels), models, opts, loss_fn, batch_size=8, generator=gens)
    together = [ev["train_loss"] for ev in islice(stream, 3)]
    for k, lr in enumerate([1e-2, 3e-3, 1e-3]):
        gen = torch.Generator().manual_seed(seeds[k])
        solo = epoch_stream((X, labels), alone[k], Adam(alone[k].parameters(), lr=lr), loss_fn,
                            batch_size=8, generator=gen)  # fmt: skip
        losses = [ev["train_loss"] for ev in islice(solo, 3)]
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        _assert_same_weights(models[k], alone[k])


def test_a_parameter_the_forward_never_uses_gets_no_update() -> None:
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.spare = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    models = [WithSpare() for _ in range(2)]
    alone = [copy.deepcopy(m) for m in models]
    spare = [m.spare.weight.detach().clone() for m in models]
    together = _together(models, [SGD(m.parameters(), lr=0.05) for m in models], 2, batch_size=8)
    for k, model in enumerate(alone):
        losses = _alone(model, SGD(model.parameters(), lr=0.05), 2, batch_size=8)
        assert [epoch[k] for epoch in together] == pytest.approx(losses, rel=2e-4)
        assert torch.equal(models[k].spare.weight, spare[k])
