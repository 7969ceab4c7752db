"""``search``: an Optuna study's trials trained K at a time, slots refilled as trials end."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import augment, collect, epoch_stream, search, search_events, validation_loss

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)
States = optuna.trial.TrialState

g = torch.Generator().manual_seed(0)
X = torch.randn(96, 3, generator=g)
Y = X @ torch.tensor([[1.0], [-1.0], [0.5]]) + 0.1 * torch.randn(96, 1, generator=g)
VAL = (X[:32], Y[:32])
STAGES = [augment(validation_loss(VAL, nn.MSELoss()))]


def _build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def _study(**kwargs: Any) -> Any:
    options = {"pruner": optuna.pruners.NopPruner(), **kwargs}
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), **options)


def _run(study: Any, build: Any = _build, **kwargs: Any) -> list[dict[str, Any]]:
    options: dict[str, Any] = {"key": "val_loss", "epochs": 4, "n_trials": 7, "slots": 3}
    options.update({"batch_size": 16, "stages": STAGES, "shuffle": False, **kwargs})
    return collect(search_events(study, build, (X, Y), nn.MSELoss(), **options))


def test_every_trial_runs_its_epochs_in_a_slot_that_refills_at_once() -> None:
    study = _study()
    history = _run(study)
    assert len(study.trials) == 7
    assert {t.state for t in study.trials} == {States.COMPLETE}
    # 7 trials x 4 epochs in 3 slots: slots refilled as soon as a trial ends
    assert history[0]["trial"] == [0, 1, 2]
    assert history[4]["trial"] == [3, 4, 5]
    assert history[8]["trial"][0] == 6
    assert all(math.isnan(n) for n in history[8]["trial"][1:])  # nothing left to train
    assert len(history) == 12
    assert [ev["trial_step"][0] for ev in history] == [1, 2, 3, 4] * 3
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4]


def test_each_trial_is_told_its_best_value_over_its_epochs() -> None:
    study = _study()
    history = _run(study)
    seen: dict[int, list[float]] = {}
    for event in history:
        for number, value in zip(event["trial"], event["val_loss"], strict=True):
            if not math.isnan(number) and len(seen.setdefault(number, [])) < 4:
                seen[number].append(value)
    for trial in study.trials:
        assert trial.value == min(seen[trial.number])
        assert list(trial.intermediate_values.values()) == seen[trial.number]
    maximize = _study(direction="maximize")
    _run(maximize, n_trials=3)
    assert all(t.value == max(t.intermediate_values.values()) for t in maximize.trials)


def test_a_trial_in_a_refilled_slot_trains_as_it_would_alone() -> None:
    study = _study()
    _run(study)
    trial = study.trials[5]  # trained in a refilled slot, from the ensemble's 5th epoch
    model, optimizer = _build(optuna.trial.FixedTrial(trial.params, number=5))
    alone = epoch_stream((X, Y), model, optimizer, nn.MSELoss(), batch_size=16, shuffle=False)
    add = validation_loss(VAL, nn.MSELoss())
    expected = [add(ev)["val_loss"] for ev in islice(alone, 4)]
    assert list(trial.intermediate_values.values()) == pytest.approx(expected, rel=2e-4)


def test_pruned_trials_leave_their_slots_early() -> None:
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=0.5, n_warmup_steps=1))
    history = _run(study, n_trials=8, epochs=6)
    states = [t.state for t in study.trials]
    assert States.PRUNED in states
    assert States.COMPLETE in states
    assert len(states) == 8
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == States.PRUNED:
            assert len(steps) < 6
            assert trial.intermediate_values[steps[-1]] > 0.5
        else:
            assert steps == [1, 2, 3, 4, 5, 6]
    assert history[-1]["trials_done"] + history[-1]["trials_pruned"] == 8


def test_no_pruning_with_prune_false() -> None:
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=1e-9))
    _run(study, prune=False, n_trials=3)
    assert {t.state for t in study.trials} == {States.COMPLETE}
    assert all(t.intermediate_values == {} for t in study.trials)


def test_architectures_train_in_ensembles_of_their_own() -> None:
    def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
        width = trial.suggest_categorical("width", [2, 5])
        model = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1))
        return model, torch.optim.SGD(model.parameters(), lr=0.05)

    study = _study()
    history = _run(study, build, n_trials=8, slots=4)
    assert {t.state for t in study.trials} == {States.COMPLETE}
    widths = {t.number: t.params["width"] for t in study.trials}
    for event in history:
        assert len({widths[n] for n in event["trial"] if not math.isnan(n)}) == 1
    assert {widths[n] for ev in history for n in ev["trial"] if not math.isnan(n)} == {2, 5}


def test_a_build_that_raises_fails_only_its_trial() -> None:
    def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
        if trial.number == 1:
            raise RuntimeError("out of ideas")
        return _build(trial)

    study = _study()
    _run(study, build, n_trials=4)
    states = [t.state for t in study.trials]
    assert states == [States.COMPLETE, States.FAIL, States.COMPLETE, States.COMPLETE]
    assert "RuntimeError: out of ideas" in study.trials[1].user_attrs["fail_reason"]


@pytest.mark.parametrize(
    ("built", "error", "match"),
    [
        (lambda m, o: m, TypeError, r"trial 0 must return \(model, optimizer\), got Sequential"),
        (lambda m, o: (o, m), TypeError, r"trial 0 returned a model that is Adam"),
        (lambda m, o: (m, "adam"), TypeError, r"trial 0 returned an optimizer that is str"),
        (lambda m, o: (m, torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1)), ValueError,
         r"trial 0"),
        (lambda m, o: (m.to("meta"), o), ValueError,
         r"trial 0 returned a model with '0.weight' on meta"),
    ],
)  # fmt: skip
def test_a_build_that_returns_the_wrong_things_is_an_error_naming_the_trial(
    built: Any, error: Any, match: str
) -> None:
    study = _study()

    def build(trial: Any) -> Any:
        return built(*_build(trial))

    with pytest.raises(error, match=match):
        _run(study, build)
    assert [t.state for t in study.trials] == [States.FAIL]


def test_an_interrupted_search_tells_its_trials_fail_and_leaves_none_running() -> None:
    study = _study()
    calls = 0

    def interrupt(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        _run(study, stages=[*STAGES, augment(interrupt)])
    assert {t.state for t in study.trials} == {States.FAIL}
    assert len(study.trials) == 3
    assert "KeyboardInterrupt" in study.trials[0].user_attrs["fail_reason"]


def test_search_returns_the_study_and_its_events_name_trials_in_tables() -> None:
    pd = pytest.importorskip("pandas")
    from fitstream import collect_pd

    study = _study()
    options = {"key": "val_loss", "epochs": 2, "n_trials": 3, "slots": 2, "batch_size": 32,
               "stages": STAGES}  # fmt: skip
    assert search(study, _build, (X, Y), nn.MSELoss(), **options) is study
    frame = collect_pd(search_events(_study(), _build, (X, Y), nn.MSELoss(), **options))
    assert isinstance(frame, pd.DataFrame)
    rows = frame[frame["trial"].notna()]
    assert sorted(rows.groupby("trial")["trial_step"].apply(list).tolist()) == [[1, 2]] * 3
    assert "params_lr" in frame.columns


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_trials": 0}, ValueError, r"search: 'n_trials' must be a positive int, got 0"),
        ({"slots": "4"}, TypeError, r"'slots' must be a positive int"),
        ({"key": ""}, ValueError, r"'key'"),
        ({"stages": "augment"}, TypeError, r"'stages' must be a list of stages"),
        ({"prune": "yes"}, TypeError, r"'prune' must be True or False"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    kwargs: dict[str, Any], error: Any, match: str
) -> None:
    options: dict[str, Any] = {"key": "val_loss", "epochs": 2, "n_trials": 3, **kwargs}
    with pytest.raises(error, match=match):
        search_events(_study(), _build, (X, Y), nn.MSELoss(), **options)
    with pytest.raises(TypeError, match="'study' must be an optuna Study"):
        search_events("study", _build, (X, Y), nn.MSELoss(), key="val_loss", epochs=1, n_trials=1)


def test_a_missing_key_is_named_with_the_keys_the_events_have() -> None:
    with pytest.raises(KeyError, match=r"the events must hold 'val_los'.*'train_loss'"):
        _run(_study(), key="val_los")


def test_nan_values_are_left_out_of_the_best_and_all_nan_fails() -> None:
    study = _study()

    def score(event: dict[str, Any]) -> dict[str, Any]:
        return {"score": [math.nan, *event["val_loss"][1:]]}

    _run(study, key="score", stages=[*STAGES, augment(score)], n_trials=3)
    assert [t.state for t in study.trials] == [States.FAIL, States.COMPLETE, States.COMPLETE]
    assert study.trials[0].user_attrs["fail_reason"] == "every value of the key was NaN"


def test_a_progress_bar_shows_the_trials_done_pruned_and_running() -> None:
    import io

    from fitstream import pipe, progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=0.5, n_warmup_steps=1))
    options: dict[str, Any] = {"key": "val_loss", "epochs": 4, "n_trials": 6, "slots": 3,
                               "batch_size": 16, "stages": STAGES}  # fmt: skip
    events = search_events(study, _build, (X, Y), nn.MSELoss(), **options)
    keys = ("trials_done", "trials_pruned", "trials_running")
    list(pipe(events, progress(*keys, file=out)))
    final = out.getvalue().rstrip("\n").split("\r")[-1]
    done = sum(t.state == States.COMPLETE for t in study.trials)
    pruned = sum(t.state == States.PRUNED for t in study.trials)
    assert done + pruned == 6
    assert f"trials_done={done}" in final
    assert f"trials_pruned={pruned}" in final
    assert "trials_running=" in final
