"""ensemble_stream: what it refuses at the call, and the per-member fallback optimizer path."""

from __future__ import annotations

import copy
import warnings
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import Ensemble, ensemble_stream, epoch_stream

SGD = torch.optim.SGD


def _mlp(seed: int = 0, hidden: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(30, 4, generator=g), torch.randn(30, 2, generator=g)


def _call(models: Any, optimizers: Any = None, **kwargs: Any) -> Any:
    if optimizers is None:
        optimizers = [SGD(m.parameters(), lr=0.1) for m in models]
    loss_fn = kwargs.pop("loss_fn", nn.MSELoss())
    data = kwargs.pop("data", _data())
    return ensemble_stream(data, models, optimizers, loss_fn, **kwargs)


def test_models_of_different_architectures_are_refused_naming_the_difference() -> None:
    with pytest.raises(
        ValueError,
        match=r"'models\[1\]' differs from 'models\[0\]' in parameter "
        r"'0.weight': shape \(8, 4\) vs \(6, 4\)",
    ):
        _call([_mlp(0), _mlp(1, hidden=6)])
    other = _mlp(2).double()
    with pytest.raises(
        ValueError,
        match=r"'models\[2\]' .* parameter '0.weight': dtype "
        r"torch.float32 vs torch.float64",
    ):
        _call(
            [_mlp(0), _mlp(1), other],
            [SGD(m.parameters(), lr=0.1) for m in (_mlp(0), _mlp(1), other)],
        )
    relu = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(
        ValueError,
        match=r"in its modules: '1' \(Tanh\) in models\[0\], '1' "
        r"\(ReLU\) in models\[1\]",
    ):
        _call([_mlp(0), relu])
    renamed = nn.Sequential()
    renamed.add_module("a", nn.Linear(4, 8))
    with pytest.raises(ValueError, match=r"differs from 'models\[0\]' in its modules"):
        _call([_mlp(0), renamed])


def test_optimizers_must_match_the_models_one_to_one() -> None:
    models = [_mlp(0), _mlp(1)]
    opts = [SGD(m.parameters(), lr=0.1) for m in models]
    with pytest.raises(ValueError, match=r"one optimizer per model: got 1 optimizers for 2 models"):
        _call(models, opts[:1])
    with pytest.raises(
        ValueError,
        match=r"'optimizers\[0\]' is over the parameters of "
        r"'models\[1\]', not 'models\[0\]'; pass the optimizers in the order",
    ):
        _call(models, opts[::-1])
    stranger = SGD(_mlp(3).parameters(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"'optimizers\[1\]' holds a parameter that belongs to "
        r"none of 'models'",
    ):
        _call(models, [opts[0], stranger])
    partial = SGD(models[1][0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups of 'optimizers\[1\]' hold the parameters"):
        _call(models, [opts[0], partial])
    with pytest.raises(
        TypeError,
        match=r"'optimizers\[1\]' must be a torch.optim.Optimizer, "
        r"got str",
    ):
        _call(models, [opts[0], "sgd"])
    with pytest.raises(TypeError, match=r"'optimizers' must be a list or tuple"):
        _call(models, opts[0])


def test_devices_sharing_and_empty_models_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'models' must hold at least one model"):
        _call([], [])
    with pytest.raises(
        TypeError, match=r"'models' must be a list or tuple of torch.nn.Module, got Sequential"
    ):
        _call(_mlp(0), [])
    with pytest.raises(TypeError, match=r"'models\[1\]' must be a torch.nn.Module, got int"):
        _call([_mlp(0), 3], [])
    with pytest.raises(ValueError, match=r"'models\[0\]' has no parameters to train"):
        _call([nn.ReLU(), nn.ReLU()], [])
    shared = _mlp(0)
    twin = nn.Sequential(shared[0], nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'models\[1\]' shares '0.weight' with 'models\[0\]'"):
        _call([shared, twin])
    aliased = _mlp(1)
    aliased[2].bias.data = shared[2].bias.data
    with pytest.raises(ValueError, match=r"'models\[1\]' shares '2.bias'"):
        _call([shared, aliased])
    meta = _mlp(1).to("meta")
    with pytest.raises(
        ValueError,
        match=r"'models\[1\]' has '0.weight' on device meta but "
        r"'models\[0\]' is on cpu",
    ):
        _call([_mlp(0), meta])
    on_meta = [_mlp(0).to("meta"), _mlp(1).to("meta")]
    with pytest.raises(ValueError, match=r"'train_data\[0\]' is on device cpu but the model is on"):
        _call(on_meta)


def test_batchnorm_with_running_statistics_is_refused_naming_the_module() -> None:
    def net(track: bool) -> nn.Module:
        return nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=track), nn.Linear(8, 2)
        )

    with pytest.raises(
        ValueError, match=r"holds BatchNorm1d at '1', which updates running statistics"
    ):
        _call([net(True), net(True)])
    with pytest.raises(ValueError, match=r"BatchNorm1d at '1'"):
        Ensemble([net(True), net(True)])
    losses = next(_call([net(False), net(False)], batch_size=10))["train_loss"]
    assert len(losses) == 2


def test_everything_epoch_stream_refuses_is_refused_too() -> None:
    models = [_mlp(0), _mlp(1)]
    X, y = _data()
    with pytest.raises(ValueError, match=r"ensemble_stream: 'batch_size' must be a positive int"):
        _call(models, batch_size=0)
    with pytest.raises(ValueError, match=r"ensemble_stream: 'extra' must not set the event's own"):
        _call(models, extra={"train_loss": 1})
    with pytest.raises(ValueError, match=r"ensemble_stream: 'step_offset' must be a non-negative"):
        _call(models, step_offset=-1)
    with pytest.raises(TypeError, match=r"ensemble_stream: 'generator' must be a torch.Generator"):
        _call(models, generator=3)
    with pytest.raises(TypeError, match=r"ensemble_stream: 'loss_fn' must be callable"):
        _call(models, loss_fn="mse")
    with pytest.raises(ValueError, match=r"ensemble_stream: all tensors in 'train_data' must have"):
        _call(models, data=(X, y[:5]))
    with pytest.raises(ValueError, match=r"last_label=True needs at least two tensors"):
        _call(models, data=(X,))
    with pytest.raises(TypeError, match=r"'train_data' must be a tuple or list of tensors"):
        _call(models, data=X)
    with pytest.raises(TypeError, match=r"ensemble_stream: 'shuffle' must be True or False"):
        _call(models, shuffle="no")
    with pytest.raises(TypeError, match=r"ensemble_stream: 'last_label' must be True or False"):
        _call(models, last_label=1)
    with pytest.raises(ValueError, match=r"'train_data\[0\]' requires grad"):
        _call(models, data=(X.clone().requires_grad_(), y))
    with pytest.raises(ValueError, match=r"'train_data\[0\]' has dtype torch.float64"):
        _call(models, data=(X.double(), y))


@pytest.mark.parametrize(
    ("loss_fn", "error", "match"),
    [
        (lambda p, t: 1.0, TypeError, "'loss_fn' must return a scalar tensor, got something"),
        (
            lambda p, t: (p - t).square(),
            ValueError,
            r"one value per member and batch.*shape "
            r"\(8, 2\)",
        ),
        (lambda p, t: (p - t).square().mean().detach(), ValueError, "does not depend on any"),
    ],
)
def test_a_loss_that_cannot_be_trained_says_what_came(loss_fn: Any, error: Any, match: str) -> None:
    stream = _call([_mlp(0), _mlp(1)], loss_fn=loss_fn, batch_size=8)
    with pytest.raises(error, match=match):
        next(stream)


def test_another_optimizer_class_steps_each_member_alone_with_one_warning() -> None:
    models = [_mlp(seed) for seed in range(3)]
    alone = [copy.deepcopy(m) for m in models]
    lrs = [0.01, 0.003, 0.001]
    opts = [torch.optim.RMSprop(m.parameters(), lr=lr) for m, lr in zip(models, lrs, strict=True)]
    with pytest.warns(UserWarning, match=r"no vectorised step for RMSprop.*slower") as record:
        stream = _call(models, opts, batch_size=8, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        together = [ev["train_loss"] for ev in islice(stream, 3)]
    assert len(record) == 1
    assert next(iter(opts[0].state.values()))  # the member's own optimizer holds the state
    assert stream is not None
    for k, lr in enumerate(lrs):
        model = alone[k]
        solo = epoch_stream(
            _data(),
            model,
            torch.optim.RMSprop(model.parameters(), lr=lr),
            nn.MSELoss(),
            batch_size=8,
            generator=torch.Generator().manual_seed(1),
        )
        assert [ev["train_loss"] for ev in islice(solo, 3)] == pytest.approx(
            [epoch[k] for epoch in together], rel=2e-4
        )
        for p, q in zip(models[k].parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=2e-4, atol=2e-6)
    hparams = next(stream)["model"].hparams[1]
    assert hparams["optimizer"] == "RMSprop"
    assert hparams["lr"] == 0.003


def test_optimizers_that_already_hold_state_are_taken_in_by_the_vectorised_step() -> None:
    models = [_mlp(0), _mlp(1)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    for m, opt in zip(models, opts, strict=True):
        m(torch.ones(1, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = _call(models, opts, batch_size=8)
    step = next(iter(opts[0].state.values()))["step"].item()
    next(stream)
    assert next(iter(opts[0].state.values()))["step"].item() == step + 4


def test_state_the_vectorised_step_cannot_take_goes_through_the_fallback() -> None:
    models = [_mlp(0), _mlp(1)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]
    for m, opt in zip(models, opts, strict=True):
        m(torch.ones(1, 4)).sum().backward()
        opt.step()
    first = next(iter(opts[1].state.values()))
    first["step"] = torch.tensor(5.0)  # its parameters now differ in step count
    with pytest.warns(UserWarning, match=r"optimizers\[1\] holds different step counts"):
        stream = _call(models, opts, batch_size=8)
    next(stream)
    assert next(iter(opts[1].state.values()))["step"].item() == 9


def test_a_list_of_generators_needs_one_distinct_generator_per_model() -> None:
    models = [_mlp(0), _mlp(1)]
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"one torch.Generator per model: got 1 for 2 models"):
        _call(models, generator=[g])
    with pytest.raises(TypeError, match=r"'generator\[1\]' must be a torch.Generator, got int"):
        _call(models, generator=[g, 3])
    with pytest.raises(
        ValueError, match=r"'generator\[1\]' is the same object as 'generator\[0\]'"
    ):
        _call(models, generator=[g, g])


def test_hooks_that_an_ensemble_would_skip_are_refused_naming_them() -> None:
    models = [nn.Linear(2, 1) for _ in range(2)]
    data = (torch.randn(8, 2), torch.randn(8, 1))
    sgd = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    handle = sgd[1].register_step_pre_hook(lambda opt, args, kwargs: None)
    with pytest.raises(
        ValueError, match=r"'optimizers\[1\]' has a hook from register_step_pre_hook"
    ):
        ensemble_stream(data, models, sgd, nn.MSELoss())
    handle.remove()
    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(lambda *a: None)
    try:
        with pytest.raises(ValueError, match=r"a global optimizer step hook is registered"):
            ensemble_stream(data, models, sgd, nn.MSELoss())
    finally:
        handle.remove()
    handle = models[0].register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match=r"models\[0\] has a hook from register_forward_hook"):
        ensemble_stream(data, models, sgd, nn.MSELoss())
    handle.remove()
    # an optimizer stepped per member keeps its hooks, and they run once per member and step
    calls: list[int] = []
    rprop = [torch.optim.Rprop(m.parameters()) for m in models]
    for k, opt in enumerate(rprop):
        opt.register_step_post_hook(lambda o, a, kw, k=k: calls.append(k))
    with pytest.warns(UserWarning, match="each member's optimizer steps on its own"):
        events = ensemble_stream(data, models, rprop, nn.MSELoss(), batch_size=4)
    next(events)
    assert sorted(calls) == [0, 0, 1, 1]  # 2 steps of 2 members


def test_a_per_epoch_scheduler_on_an_ensemble_steps_without_the_ordering_warning() -> None:
    from fitstream import pipe, take, tap

    models = [nn.Linear(2, 1) for _ in range(2)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in optimizers]
    events = ensemble_stream(
        (torch.randn(8, 2), torch.randn(8, 1)), models, optimizers, nn.MSELoss()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()"
        stream = pipe(events, tap(lambda ev: [s.step() for s in schedulers]), take(3))
        rates = [ev["lr"] for ev in stream]
    assert rates == [[0.1, 0.1], [0.05, 0.05], [0.025, 0.025]]
