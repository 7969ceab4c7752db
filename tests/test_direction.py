"""The one direction rule: inferred from the key's name, refused when the name tells neither."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import BestModel, best_model, early_stop, pipe, reduce_lr_on_plateau, tap
from fitstream._internal.direction import infer_mode


@pytest.mark.parametrize(
    "key",
    ["val_loss", "train_loss", "test_error", "val_mse", "val_mae", "val_rmse", "nll", "val/ppl",
     "perplexity", "valloss", "val_cost"],
)  # fmt: skip
def test_losses_and_errors_are_minimised(key: str) -> None:
    assert infer_mode(key) == "min"


@pytest.mark.parametrize(
    "key",
    ["val_acc", "val_accuracy", "f1", "val_auc", "precision", "recall", "test_r2", "score",
     "val_iou", "dice", "top1accuracy", "val-f1"],
)  # fmt: skip
def test_accuracies_and_scores_are_maximised(key: str) -> None:
    assert infer_mode(key) == "max"


def _stages(key: str, **kwargs: Any) -> list[Any]:
    return [
        lambda: early_stop(key=key, patience=3, **kwargs),
        lambda: best_model(key, **kwargs),
        lambda: BestModel(key, **kwargs),
        lambda: reduce_lr_on_plateau(key, **kwargs),
    ]


@pytest.mark.parametrize("index", range(4))
def test_a_name_that_tells_no_direction_is_refused_at_the_call_with_both_choices(
    index: int,
) -> None:
    make = _stages("val_wobble")[index]
    with pytest.raises(ValueError, match=r"'val_wobble' improves up or down; pass mode='min'"):
        make()
    with pytest.raises(ValueError, match=r"or mode='max' \(larger is better"):
        make()
    _stages("val_wobble", mode="max")[index]()  # a mode given is taken as it is


def test_early_stop_on_an_accuracy_keeps_going_while_it_rises() -> None:
    # The first week's bug: under "min", epoch 1 stayed "best" and the run stopped at 4.
    accuracies = [0.883, 0.90, 0.91, 0.92, 0.93, 0.93, 0.93, 0.93]
    events = [{"step": i, "val_acc": a} for i, a in enumerate(accuracies, 1)]
    model = nn.Linear(1, 1)
    best = best_model("val_acc")
    for event in events:
        event["model"] = model
    steps = [e["step"] for e in pipe(events, tap(best), early_stop(key="val_acc", patience=3))]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert (best.mode, best.best_step, best.best_value) == ("max", 5, 0.93)


def test_reduce_lr_on_plateau_reduces_when_an_accuracy_stops_rising() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    events = [{"step": i, "val_acc": a} for i, a in enumerate([0.5, 0.6, 0.7, 0.7, 0.7], 1)]
    rates = []
    for _ in pipe(events, reduce_lr_on_plateau("val_acc", patience=1, optimizer=opt)):
        rates.append(opt.param_groups[0]["lr"])
    assert rates == [1.0, 1.0, 1.0, 1.0, pytest.approx(0.1)]


def test_the_0_4_direction_keyword_still_works_and_says_to_write_mode() -> None:
    with pytest.warns(DeprecationWarning, match=r"'direction' is the 0.4 name of 'mode'"):
        best = best_model("val_wobble", direction="max")
    assert (best.mode, best.direction) == ("max", "max")
    with pytest.warns(DeprecationWarning, match=r"write mode='min'"):
        assert BestModel("val_wobble", direction="min").mode == "min"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BestModel("val_acc", "min", "cpu").mode == "min"  # 0.4's positions: no warning


def test_mode_and_direction_together_are_refused() -> None:
    with pytest.raises(TypeError, match=r"give 'mode' only .* got mode='min' and direction='max'"):
        best_model("val_loss", mode="min", direction="max")
