"""Grids over any settings, judged by k-fold CV: the tables and plots a user compares them by.

The traps of 0.7 as they were hit (several histories joined in one list, colours reused across
calls on one axis, a collected history given to collect_pd), then the grid as a study: its
table equals the one computed by hand from lone runs, and the winner is refit.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    augment,
    collect,
    collect_pd,
    ensemble_stream,
    epoch_stream,
    evaluate,
    kfold,
    pipe,
    plot_history,
    refit,
    search_events,
    summarize,
    take,
    validation_loss,
)

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

g = torch.Generator().manual_seed(0)
X = torch.randn(90, 4, generator=g)
Y = (X[:, 0] - X[:, 1] > 0).long()
SPLITS = kfold(len(X), 3, generator=torch.Generator().manual_seed(1))
LRS = [0.01, 0.1]


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == labels).float().mean()


def _mlp(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


def _width_history(width: int) -> list[dict[str, Any]]:
    """The 0.7 user's path: one ensemble per width, lrs x folds, hparams fold and width."""
    settings = [(lr, f) for lr in LRS for f in range(3)]
    models = [_mlp(width, k) for k in range(len(settings))]
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m, (lr, _) in zip(models, settings,
                                                                         strict=True)]  # fmt: skip
    events = ensemble_stream(
        (X, Y), models, opts, nn.CrossEntropyLoss(), batch_size=16, shuffle=False,
        rows=[SPLITS[f][0] for _, f in settings],
        hparams=[{"fold": f, "width": width} for _, f in settings],
    )  # fmt: skip
    score = augment(validation_loss((X, Y), nn.CrossEntropyLoss(), folds=SPLITS))
    return collect(pipe(events, score, take(4)))


HISTS = {width: _width_history(width) for width in (3, 6)}


# -- several histories in one list -----------------------------------------------------------


def test_joined_histories_are_read_stream_by_stream_as_the_user_hit_it() -> None:
    joined = summarize(HISTS[3] + HISTS[6], by=["width", "lr"], key="val_loss")
    assert len(joined) == 4  # was 2 rows, all labelled with the first width
    for width in (3, 6):
        alone = summarize(HISTS[width], by=["width", "lr"], key="val_loss")
        for _, row in alone.iterrows():
            same = joined[(joined["width"] == width) & (joined["lr"] == row["lr"])]
            assert len(same) == 1
            assert same.iloc[0]["mean"] == pytest.approx(row["mean"])
            assert same.iloc[0]["best_step"] == row["best_step"]


def test_a_dict_names_each_stream_when_their_members_tell_nothing_apart() -> None:
    def untold(history: list[dict[str, Any]]) -> list[dict[str, Any]]:  # no width to tell
        return [
            {**r, "hparams": [{k: v for k, v in h.items() if k != "width"} for h in r["hparams"]]}
            for r in history
        ]

    plain, other = untold(HISTS[3]), untold(HISTS[6])
    table = summarize({"narrow": plain, "wide": other}, by=["stream", "lr"], key="val_loss")
    assert sorted(table["stream"].tolist()) == ["narrow", "narrow", "wide", "wide"]
    figure = plot_history({"narrow": plain, "wide": other}, "val_loss", group_by="stream")
    assert len(figure.axes[0].get_lines()) == 2


def test_plot_history_refuses_joined_streams_without_group_by_and_says_why() -> None:
    with pytest.raises(ValueError, match=r"joins 2 streams \(a new one starts at record 4.*ax="):
        plot_history(HISTS[3] + HISTS[6], "val_loss")
    figure = plot_history(HISTS[3] + HISTS[6], "val_loss", group_by=["width", "lr"])
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert len(labels) == 4
    assert len(set(labels)) == 4


def test_colours_stay_tied_to_a_setting_across_calls_on_one_axis() -> None:
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    for width in (3, 6):
        plot_history(HISTS[width], ["val_loss", "train_loss"], group_by=["width", "lr"], ax=ax)
    colours: dict[str, set[str]] = {}
    for line in ax.get_lines():
        setting = line.get_label().split(" ")[1]  # "val_loss width=3,lr=0.01 (n=3)"
        colours.setdefault(setting, set()).add(str(line.get_color()))
    assert len(colours) == 4
    assert all(len(c) == 1 for c in colours.values())  # one setting, one colour, both keys
    assert len({next(iter(c)) for c in colours.values()}) == 4  # was: width=6 reused width=3's


def test_collect_pd_of_a_collected_history_is_read_like_the_events() -> None:
    frame = collect_pd(HISTS[3])
    assert "member" in frame.columns
    assert len(frame) == 4 * 6
    table = summarize(frame, by="lr", key="val_loss")
    expected = summarize(HISTS[3], by="lr", key="val_loss")
    assert table["mean"].tolist() == pytest.approx(expected["mean"].tolist())


def test_values_that_are_strings_are_refused_naming_the_key() -> None:
    history = [{**r, "val_loss": [str(v) for v in r["val_loss"]]} for r in HISTS[3]]
    with pytest.raises(TypeError, match=r"record 0's 'val_loss' holds a string for member 0"):
        summarize(history, by="lr", key="val_loss")


# -- a grid as a study -----------------------------------------------------------------------


def _build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    width = trial.suggest_categorical("width", [3, 6])
    lr = trial.suggest_categorical("lr", LRS)
    model = _mlp(width, trial.number)
    return model, torch.optim.Adam(model.parameters(), lr=lr)


STAGES = [augment(evaluate((X, Y), metrics={"val_acc": _accuracy}, folds=SPLITS))]
GRID = {"width": [3, 6], "lr": LRS}


def _grid(**kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(GRID))
    events = search_events(
        study, _build, (X, Y), nn.CrossEntropyLoss(), key="val_acc", epochs=5, n_trials=4,
        slots=12, batch_size=16, folds=SPLITS, stages=STAGES, prune=False, **kwargs,
    )  # fmt: skip
    return study, collect(events)


def _lone_curves(trial: Any) -> list[list[float]]:
    """The trial's folds trained one by one with epoch_stream, on each fold's rows alone."""
    curves = []
    for f, (train, held) in enumerate(SPLITS):
        model, opt = _build(optuna.trial.FixedTrial(trial.params, number=trial.number))
        gen = torch.Generator().manual_seed(trial.number * 3 + f)
        alone = epoch_stream((X[train], Y[train]), model, opt, nn.CrossEntropyLoss(),
                             batch_size=16, generator=gen)  # fmt: skip
        score = evaluate((X[held], Y[held]), metrics={"val_acc": _accuracy})
        curves.append([score(ev)["val_acc"] for ev in islice(alone, 5)])
    return curves


def test_a_grid_table_equals_the_one_computed_by_hand_from_lone_runs() -> None:
    study, _ = _grid()
    table = summarize(study)
    assert list(table.columns[:2]) == ["width", "lr"]
    by_hand = []
    for trial in study.trials:
        curves = _lone_curves(trial)
        means = [math.fsum(v) / 3 for v in zip(*curves, strict=True)]
        at = max(range(5), key=lambda i: (means[i], -i))  # the first best
        folds = [c[at] for c in curves]
        by_hand.append((trial.params, at + 1, folds))
    best = max(by_hand, key=lambda item: math.fsum(item[2]))
    for params, step, folds in by_hand:
        row = table[(table["width"] == params["width"]) & (table["lr"] == params["lr"])].iloc[0]
        mean = math.fsum(folds) / 3
        assert row["n"] == 3
        assert row["best_step"] == step
        assert row["mean"] == pytest.approx(mean, rel=1e-5)
        assert row["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in folds) / 3),
                                           rel=1e-4, abs=1e-6)  # fmt: skip
        assert row["sem"] == pytest.approx(
            math.sqrt(sum((v - mean) ** 2 for v in folds) / 2 / 3), rel=1e-4, abs=1e-6
        )
        differences = [a - b for a, b in zip(folds, best[2], strict=True)]
        assert row["diff"] == pytest.approx(math.fsum(differences) / 3, abs=1e-6)
        assert bool(row["best_at_end"]) == (step == 5)
    assert table["mean"].tolist() == sorted(table["mean"].tolist(), reverse=True)


def test_the_search_events_give_the_studys_table() -> None:
    study, history = _grid()
    from_study = summarize(study)
    from_events = summarize(history, by=["params_width", "params_lr"], key="val_acc")
    assert from_events["mean"].tolist() == pytest.approx(from_study["mean"].tolist())
    assert from_events["best_step"].tolist() == from_study["best_step"].tolist()
    figure = plot_history(study, group_by=["width", "lr"])
    assert len(figure.axes[0].get_lines()) == 4
    figure = plot_history(history, "val_acc", group_by=["params_width", "params_lr"])
    assert len(figure.axes[0].get_lines()) == 4
    with pytest.raises(ValueError, match=r"a search.s events.*group_by="):
        plot_history(history, "val_acc")


def test_refit_trains_the_winner_on_all_rows_for_its_best_step_epochs() -> None:
    study, _ = _grid()
    best = study.best_trial
    model = refit(study, _build, (X, Y), nn.CrossEntropyLoss(), batch_size=16, seed=7)
    alone, opt = _build(optuna.trial.FixedTrial(best.params, number=best.number))
    events = epoch_stream((X, Y), alone, opt, nn.CrossEntropyLoss(), batch_size=16,
                          generator=torch.Generator().manual_seed(7))  # fmt: skip
    list(islice(events, best.user_attrs["best_step"]))
    for a, b in zip(model.parameters(), alone.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="has no COMPLETE trial yet"):
        refit(optuna.create_study(), _build, (X, Y), nn.CrossEntropyLoss())
