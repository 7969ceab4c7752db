"""What went on silently wrong before: each is an error, a warning or correct behaviour now."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    best_model,
    checkpoint,
    ema,
    ensemble_stream,
    epoch_stream,
    pipe,
    resume,
    take,
)

torch.manual_seed(8)
X = torch.randn(32, 3)
Y = X @ torch.ones(3, 1)


class Doubled(nn.Module):
    """A re-parametrisation: the weight is twice the parameter the module now holds."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


def _members(k: int = 2) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    models = [nn.Linear(3, 1) for _ in range(k)]
    return models, [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.double(), r"models\[1\]'s parameter 'weight' is no longer its view .*float64"),
        (
            lambda m: setattr(m, "bias", nn.Parameter(torch.zeros(1))),
            r"models\[1\]'s parameter 'bias' is no longer its view",
        ),
        (
            lambda m: torch.nn.utils.parametrize.register_parametrization(m, "weight", Doubled()),
            r"models\[1\]'s parameter 'weight' is no longer its view .*now gone",
        ),
    ],
)
@pytest.mark.parametrize("before", [1, 3])  # 3: the links were found holding twice, unchanged
def test_a_member_cast_or_replaced_after_the_start_is_refused(
    change: Any, match: str, before: int
) -> None:
    models, opts = _members()
    events = ensemble_stream((X, Y), models, opts, nn.MSELoss(), batch_size=8)
    for _ in range(before):
        next(events)
    change(models[1])
    with pytest.raises(RuntimeError, match=f"^ensemble_stream: {match}"):
        next(events)


def test_a_frozen_member_keeps_the_weights_loaded_into_it() -> None:
    models, opts = _members()
    events = ensemble_stream((X, Y), models, opts, nn.MSELoss(), batch_size=8, shuffle=False)
    next(events)["model"].freeze(0)
    next(events)
    loaded = {"weight": torch.ones(1, 3), "bias": torch.zeros(1)}
    models[0].load_state_dict(loaded)
    event = next(events)
    torch.testing.assert_close(models[0].weight.detach(), loaded["weight"])
    # the event's loss describes the weights the member holds
    with torch.no_grad():
        assert event["train_loss"][0] == pytest.approx(
            nn.functional.mse_loss(models[0](X), Y).item()
        )
    next(events)
    torch.testing.assert_close(models[0].weight.detach(), loaded["weight"])


@pytest.mark.parametrize("source", ["epoch_stream", "ensemble_stream"])
def test_a_string_rate_is_refused(source: str) -> None:
    models, opts = _members()
    opts[0].param_groups[0]["lr"] = "0.1"

    def call() -> Any:
        if source == "epoch_stream":
            return epoch_stream((X, Y), models[0], opts[0], nn.MSELoss())
        return ensemble_stream((X, Y), models, opts, nn.MSELoss())

    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\] = '0.1' \(str\); a rate must"):
        call()


def test_best_model_refuses_an_event_model_that_changes_object() -> None:
    first, second = nn.Linear(3, 1), nn.Linear(3, 1)
    events = [
        {"step": 1, "model": first, "val_loss": 1.0},
        {"step": 2, "model": second, "val_loss": 0.5},
    ]
    with pytest.raises(
        ValueError, match=r"^best_model: event\['model'\] at step 2 is another object"
    ):
        list(pipe(events, best_model("val_loss", restore=True)))
    before = first.weight.detach().clone()
    torch.testing.assert_close(first.weight.detach(), before)  # nothing loaded into either


def _run(path: Path, generator: torch.Generator | None) -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    events = epoch_stream((X, Y), model, opt, nn.MSELoss(), batch_size=8, generator=generator)
    list(pipe(events, checkpoint(path, generator=generator), take(2)))


def test_resume_without_the_saved_generator_warns(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    _run(path, torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"^resume: the checkpoint holds the state of the shuffle"):
        resume(path, nn.Linear(3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(path, nn.Linear(3, 1), generator=torch.Generator())  # given: no warning
    _run(path, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(path, nn.Linear(3, 1))  # saved without one: nothing to warn of


def test_an_ema_resumed_on_another_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ema.ckpt"
    smooth = ema("train_loss", decay=0.9)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    events = epoch_stream((X, Y), model, opt, nn.MSELoss(), batch_size=8)
    list(pipe(events, smooth, checkpoint(path, stages=[smooth]), take(2)))
    other = ema("val_loss", decay=0.9)
    resume(path, stages=[other])
    stream = pipe([{"step": 3, "val_loss": 1.0}], other)
    with pytest.raises(ValueError, match=r"^ema: the saved state averages 'train_loss', but this"):
        list(stream)
    same = ema("train_loss", decay=0.9)
    resume(path, stages=[same])
    assert next(iter(pipe([{"step": 3, "train_loss": 1.0}], same)))["train_loss_ema"] > 0


def test_an_ema_state_from_before_the_key_was_saved_still_loads() -> None:
    smooth = ema("loss", decay=0.9)
    smooth.set_state({"averages": [0.5], "per_member": False, "weight": 0.5})  # 0.6's keys
    assert next(iter(pipe([{"loss": 1.0}], smooth)))["loss_ema"] == pytest.approx(
        (0.9 * 0.5 + 0.1) / (1 - 0.45)
    )


# -- hardening round 4 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("add", "match"),
    [
        (lambda m, o: o.register_step_pre_hook(lambda *a: None),
         r"'optimizers\[1\]' has a hook from register_step_pre_hook\(\)"),
        (lambda m, o: o.register_step_post_hook(lambda *a: None),
         r"'optimizers\[1\]' has a hook from register_step_post_hook\(\)"),
        (lambda m, o: m.register_forward_hook(lambda *a: None),
         r"models\[1\] has a hook from register_forward_hook\(\)"),
    ],
)  # fmt: skip
def test_a_hook_added_after_the_call_is_refused_not_skipped(add: Any, match: str) -> None:
    models, opts = _members()
    events = ensemble_stream((X, Y), models, opts, nn.MSELoss(), batch_size=8)
    add(models[1], opts[1])  # after the call, before the first next(): was never run
    with pytest.raises(ValueError, match=match):
        next(events)
    events = ensemble_stream((X, Y), *_members(), nn.MSELoss(), batch_size=8)
    next(events)


@pytest.mark.parametrize("source", ["epoch_stream", "ensemble_stream"])
def test_a_string_rate_set_between_epochs_is_refused(source: str) -> None:
    models, opts = _members()
    events = (
        epoch_stream((X, Y), models[0], opts[0], nn.MSELoss())
        if source == "epoch_stream"
        else ensemble_stream((X, Y), models, opts, nn.MSELoss())
    )
    next(events)
    opts[0].param_groups[0]["lr"] = "0.1"  # was: trained on, lr NaN, out of the hparams
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\] = '0.1' \(str\); a rate"):
        next(events)


def test_a_string_rate_no_longer_keeps_reduce_lr_on_plateau_from_reducing() -> None:
    from fitstream import reduce_lr_on_plateau

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events = pipe(
        epoch_stream((X, Y), model, opt, nn.MSELoss()),
        reduce_lr_on_plateau(key="train_loss", patience=0),
    )
    next(events)
    opt.param_groups[0]["lr"] = "0.1"
    with pytest.raises(TypeError, match=r"epoch_stream: 'optimizer' has param_groups\[0\]"):
        next(events)


def test_summarize_refuses_values_that_are_strings() -> None:
    pytest.importorskip("pandas")
    from fitstream import summarize

    history = [
        {"step": 1, "val_loss": ["0.5", "0.4"], "hparams": [{"lr": 0.1}, {"lr": 0.2}]},
        {"step": 2, "val_loss": ["0.3", "0.2"]},
    ]  # was: a table of NaN rows
    with pytest.raises(TypeError, match=r"record 0's 'val_loss' holds a string for member 0"):
        summarize(history, by="lr", key="val_loss")


def test_rows_changed_in_place_after_the_call_do_not_reach_the_stream() -> None:
    models, opts = _members()
    rows = [torch.arange(0, 16), torch.arange(16, 32)]
    kept = [r.clone() for r in rows]
    events = ensemble_stream((X, Y), models, opts, nn.MSELoss(), batch_size=8, rows=rows,
                             shuffle=False)  # fmt: skip
    rows[0][3] = 10_000  # out of the data: was an IndexError inside the loop
    twins, twin_opts = _members()
    for twin, model in zip(twins, models, strict=True):
        twin.load_state_dict(model.state_dict())
    expected = ensemble_stream((X, Y), twins, twin_opts, nn.MSELoss(), batch_size=8, rows=kept,
                               shuffle=False)  # fmt: skip
    assert next(events)["train_loss"] == pytest.approx(next(expected)["train_loss"])
