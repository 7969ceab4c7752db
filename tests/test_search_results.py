"""What a search shows and hands back: its bar, its log lines, its folds, its best model."""

from __future__ import annotations

import io
import logging
import math
import os
import re
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import (
    Ensemble,
    augment,
    collect,
    epoch_stream,
    evaluate,
    kfold,
    load_best,
    search,
    search_events,
    validation_loss,
)

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)
States = optuna.trial.TrialState

g = torch.Generator().manual_seed(0)
X = torch.randn(90, 3, generator=g)
Y = X @ torch.tensor([[1.0], [-1.0], [0.5]]) + 0.1 * torch.randn(90, 1, generator=g)
STAGES = [augment(validation_loss((X, Y), nn.MSELoss()))]
SPLITS = kfold(len(X), 3, generator=torch.Generator().manual_seed(1))
FOLD_STAGES = [augment(validation_loss((X, Y), nn.MSELoss(), folds=SPLITS))]


def _build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def _study(**kwargs: Any) -> Any:
    options = {"pruner": optuna.pruners.NopPruner(), **kwargs}
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), **options)


def _options(**kwargs: Any) -> dict[str, Any]:
    base = {"key": "val_loss", "epochs": 3, "n_trials": 5, "slots": 3, "batch_size": 16,
            "stages": STAGES}  # fmt: skip
    return {**base, **kwargs}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return False


# -- progress and logs ----------------------------------------------------------------------


def test_the_bar_counts_finished_trials_out_of_n_trials_with_the_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = Terminal()
    from fitstream.experiments.search import progress

    monkeypatch.setattr(progress.sys, "stderr", out)
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=0.6, n_warmup_steps=1))
    search(study, _build, (X, Y), nn.MSELoss(), **_options(n_trials=6, progress=True))
    final = out.getvalue().rstrip("\n").split("\r")[-1]
    done = sum(t.state == States.COMPLETE for t in study.trials)
    pruned = sum(t.state == States.PRUNED for t in study.trials)
    assert "6/6 trials" in final
    assert f"done={done} pruned={pruned} running=0" in final
    assert f"(trial {study.best_trial.number})" in final
    assert f"best={study.best_value:.4g}" in final
    assert re.search(r"\| \d\d:\d\d<\d\d:\d\d$", final), final  # the times whole, not cut


def test_a_bar_line_too_long_for_80_columns_grows_in_a_log_rather_than_cut() -> None:
    # A two-digit best trial took the line to 81 columns: tqdm cut its time to "00:0".
    from fitstream.experiments.search.progress import SearchBar

    out = Terminal()
    bar = SearchBar(120, file=out)
    counts = {"trials_done": 17, "trials_pruned": 103, "trials_running": 0}
    bar.show(120, counts, "best=0.01244 (trial 117)")
    bar.close()
    final = out.getvalue().rstrip("\n").split("\r")[-1]
    assert "done=17 pruned=103 running=0 best=0.01244 (trial 117)" in final
    assert re.search(r"\| \d\d:\d\d<\d\d:\d\d$", final), final
    assert len(final) > 80
    short = Terminal()
    bar = SearchBar(6, file=short)
    bar.show(6, {"trials_done": 1, "trials_pruned": 5, "trials_running": 0}, "best=0.1 (trial 0)")
    bar.close()
    line = short.getvalue().rstrip("\n").split("\r")[-1]
    assert len(line) == 80  # it fits: 80 columns as before
    assert line.endswith("(trial 0) |##| 00:00<00:00")


def test_the_bar_is_drawn_at_most_once_per_interval_and_ends_up_to_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = Terminal()
    from fitstream.experiments.search import progress

    monkeypatch.setattr(progress.sys, "stderr", out)
    events = list(search_events(_study(), _build, (X, Y), nn.MSELoss(),
                                **_options(n_trials=6, progress=True)))  # fmt: skip
    drawn = [line for line in out.getvalue().split("\r") if "trials" in line]
    # hundreds of epochs a second: a draw per event wrote one line per event
    assert len(drawn) < len(events)
    assert "6/6 trials" in drawn[-1]
    assert "running=0" in drawn[-1]


def test_nothing_is_printed_without_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    search(_study(), _build, (X, Y), nn.MSELoss(), **_options())
    assert capsys.readouterr() == ("", "")


def test_each_finished_trial_logs_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=0.6, n_warmup_steps=1))
    with caplog.at_level(logging.INFO, logger="fitstream.search"):
        search(study, _build, (X, Y), nn.MSELoss(), **_options(n_trials=6))
    lines = [r.getMessage() for r in caplog.records if r.name == "fitstream.search"]
    assert len(lines) == 6
    for trial in study.trials:
        line = next(s for s in lines if s.startswith(f"Trial {trial.number} "))
        assert trial.state.name in line
        assert f"params {trial.params}" in line
        epochs = len(trial.intermediate_values)
        assert f"after {epochs} of 3 epochs" in line


# -- the best model -------------------------------------------------------------------------


def test_each_complete_trial_saves_its_best_epoch_and_load_best_gives_it_back(
    tmp_path: Path,
) -> None:
    study = _study()
    result = search(study, _build, (X, Y), nn.MSELoss(), **_options(save_dir=tmp_path / "m"))
    for trial in study.trials:
        path = Path(trial.user_attrs["state_path"])
        assert path.parent == (tmp_path / "m").absolute()
        assert path.name == f"trial-{trial.number}.pt"
    assert not list((tmp_path / "m").glob(".*.tmp"))  # written whole
    model = load_best(study, _build)
    add = validation_loss((X, Y), nn.MSELoss())
    assert add({"model": model})["val_loss"] == pytest.approx(study.best_value, rel=1e-6)
    assert result.best_model is not None
    for mine, loaded in zip(result.best_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(mine, loaded)


def test_load_best_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    study = _study()
    with pytest.raises(ValueError, match="has no COMPLETE trial yet"):
        load_best(study, _build)
    search(study, _build, (X, Y), nn.MSELoss(), **_options())
    with pytest.raises(ValueError, match=r"trial \d+ \(the best\) has no saved state.*save_dir"):
        load_best(study, _build)
    saved = _study()
    search(saved, _build, (X, Y), nn.MSELoss(), **_options(save_dir=tmp_path))

    def wider(trial: Any) -> Any:
        model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        return model, torch.optim.Adam(model.parameters())

    with pytest.raises(ValueError, match=r"'0.weight' is \(4, 3\) there, \(5, 3\) in the model"):
        load_best(saved, wider)
    os.remove(saved.best_trial.user_attrs["state_path"])
    with pytest.raises(FileNotFoundError, match=r"the saved state of trial \d+ \(the best\)"):
        load_best(saved, _build)
    with pytest.raises(TypeError, match="'study' must be an optuna Study"):
        load_best("study", _build)


# -- folds ----------------------------------------------------------------------------------


def test_with_folds_a_trial_is_one_setting_trained_on_every_fold() -> None:
    study = _study()
    history = collect(search_events(study, _build, (X, Y), nn.MSELoss(),
                                    **_options(folds=SPLITS, stages=FOLD_STAGES, slots=6,
                                               n_trials=4)))  # fmt: skip
    assert len(history[0]["trial"]) == 6  # two trials of three folds
    assert history[0]["trial"] == [0, 0, 0, 1, 1, 1]
    assert [h["fold"] for h in history[0]["hparams"]] == [0, 1, 2] * 2
    for trial in study.trials:
        folds = [
            [ev["val_loss"][k] for ev in history for k, n in enumerate(ev["trial"])
             if n == trial.number and ev["hparams"][k]["fold"] == f]
            for f in range(3)
        ]  # fmt: skip
        means = [math.fsum(v) / 3 for v in zip(*folds, strict=True)]
        assert list(trial.intermediate_values.values()) == pytest.approx(means)
        best = min(range(3), key=lambda i: means[i])
        assert trial.value == pytest.approx(means[best])
        assert trial.user_attrs["best_step"] == best + 1
        assert trial.user_attrs["fold_values"] == pytest.approx([f[best] for f in folds])


def test_a_fold_member_trains_as_epoch_stream_on_its_fold_alone() -> None:
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=1.5, n_warmup_steps=1))
    search(study, _build, (X, Y), nn.MSELoss(),
           **_options(folds=SPLITS, stages=FOLD_STAGES, slots=6, n_trials=5))  # fmt: skip
    for trial in study.trials:  # refilled slots included (pruned trials leave early)
        got = list(trial.intermediate_values.values())
        per_fold = []
        for f, (train, held) in enumerate(SPLITS):
            model, opt = _build(optuna.trial.FixedTrial(trial.params, number=trial.number))
            gen = torch.Generator().manual_seed(trial.number * 3 + f)
            alone = epoch_stream((X[train], Y[train]), model, opt, nn.MSELoss(), batch_size=16,
                                 generator=gen)  # fmt: skip
            score = validation_loss((X[held], Y[held]), nn.MSELoss())
            per_fold.append([score(ev)["val_loss"] for ev in islice(alone, len(got))])
        expected = [math.fsum(v) / 3 for v in zip(*per_fold, strict=True)]
        assert got == pytest.approx(expected, rel=1e-5)


def test_load_best_of_folds_gives_the_fold_models_as_one_ensemble(tmp_path: Path) -> None:
    study = _study()
    options = _options(folds=SPLITS, stages=FOLD_STAGES, slots=6, save_dir=tmp_path)
    result = search(study, _build, (X, Y), nn.MSELoss(), **options)
    model = load_best(study, _build)
    assert isinstance(model, Ensemble)
    assert len(model) == 3
    score = evaluate((X, Y), metrics={"val_loss": nn.MSELoss()}, folds=SPLITS)
    values = score({"model": model})["val_loss"]
    assert values == pytest.approx(study.best_trial.user_attrs["fold_values"], rel=1e-6)
    assert isinstance(result.best_model, Ensemble)


def test_folds_read_from_the_members_hyperparameters_are_refused_without_them() -> None:
    score = validation_loss((X, Y), nn.MSELoss(), folds=SPLITS)
    models = [nn.Linear(3, 1), nn.Linear(3, 1)]
    from fitstream import ensemble_stream

    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    event = next(ensemble_stream((X, Y), models, opts, nn.MSELoss(), batch_size=30))
    with pytest.raises(ValueError, match=r"member 0 on the held-out rows of its fold.*'fold'"):
        score(event)
    with pytest.raises(TypeError, match="'folds' scores each member of an ensemble"):
        score({"model": nn.Linear(3, 1)})
    with pytest.raises(ValueError, match=r"give 'rows'.*or 'folds'"):
        validation_loss((X, Y), nn.MSELoss(), folds=SPLITS, rows=[SPLITS[0][1]])
    with pytest.raises(TypeError, match=r"'folds\[0\]' must be a \(train_rows, held_out_rows\)"):
        validation_loss((X, Y), nn.MSELoss(), folds=[SPLITS[0][0]])


# -- refused at the call --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_trials": 0}, ValueError, r"search: 'n_trials' must be a positive int, got 0"),
        ({"slots": "4"}, TypeError, r"'slots' must be a positive int"),
        ({"key": ""}, ValueError, r"'key'"),
        ({"stages": "augment"}, TypeError, r"'stages' must be a list of stages"),
        ({"prune": "yes"}, TypeError, r"'prune' must be True or False"),
        ({"progress": 1}, TypeError, r"'progress' must be True or False"),
        ({"startup": -1}, ValueError, r"'startup' must be a non-negative int"),
        ({"seed": 1.5}, TypeError, r"'seed' must be an int, got float"),
        ({"folds": SPLITS, "slots": 2}, ValueError,
         r"'slots' must hold at least one trial's 3 fold members"),
        ({"folds": [SPLITS[0][0]]}, TypeError, r"'folds\[0\]' must be a \(train_rows"),
        ({"folds": "kfold"}, TypeError, r"'folds' must be a list of \(train_rows"),
        ({"heartbeat_interval": 0}, ValueError, r"'heartbeat_interval' must be a positive"),
        ({"heartbeat_interval": 5, "grace_period": 5}, ValueError,
         r"'grace_period' \(5.0 s\) must be longer than 'heartbeat_interval' \(5.0 s\)"),
        ({"stale_trial_callback": 3}, TypeError, r"'stale_trial_callback' must be callable"),
        ({"save_dir": 3}, TypeError, r"'save_dir' must be a folder path, got int"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_at_the_call(
    kwargs: dict[str, Any], error: Any, match: str
) -> None:
    with pytest.raises(error, match=match):
        search_events(_study(), _build, (X, Y), nn.MSELoss(), **_options(**kwargs))
    with pytest.raises(TypeError, match="'study' must be an optuna Study"):
        search_events("study", _build, (X, Y), nn.MSELoss(), key="val_loss", epochs=1, n_trials=1)


def test_a_study_whose_direction_contradicts_the_key_is_refused_unless_meant() -> None:
    maximize = _study(direction="maximize")
    with pytest.raises(ValueError, match=r"created to maximize.*'val_loss' improves by going down"):
        search_events(maximize, _build, (X, Y), nn.MSELoss(), **_options())
    with pytest.raises(ValueError, match=r"mode='min' says 'val_loss' improves by going down"):
        search_events(maximize, _build, (X, Y), nn.MSELoss(), **_options(mode="min"))
    search_events(maximize, _build, (X, Y), nn.MSELoss(), **_options(mode="max"))  # meant
    search_events(_study(), _build, (X, Y), nn.MSELoss(), **_options(key="val_wobble"))


def test_an_unwritable_storage_is_refused_naming_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "journal.log"
    backend = optuna.storages.journal.JournalFileBackend(str(folder))
    study = optuna.create_study(storage=optuna.storages.JournalStorage(backend))
    folder.unlink()
    folder.mkdir()  # the journal file became a folder
    with pytest.raises(IsADirectoryError, match=r"storage '.*journal.log' is a folder"):
        search_events(study, _build, (X, Y), nn.MSELoss(), **_options())
    db = tmp_path / "ro.db"
    study = optuna.create_study(storage=f"sqlite:///{db}")
    db.chmod(0o444)
    from fitstream.experiments.search import checks

    real = os.access

    def access(path: Any, mode: int) -> bool:  # as a user who is not root sees the file
        if Path(path) == db and mode & os.W_OK:
            return False
        return real(path, mode)

    monkeypatch.setattr(checks.os, "access", access)
    with pytest.raises(PermissionError, match=r"storage '.*ro.db' is read-only"):
        search_events(study, _build, (X, Y), nn.MSELoss(), **_options())
