"""``search``: an Optuna study's trials trained many at a time, slots refilled as trials end."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import augment, collect, epoch_stream, search, search_events, tap, validation_loss

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


WIDTHS = [2, 5, 2, 2, 5, 2, 5, 5, 2, 2]


def _two_widths(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(trial.number)
    width = WIDTHS[trial.number % len(WIDTHS)]
    lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
    return model, torch.optim.Adam(model.parameters(), lr=lr)


class PruneAt(optuna.pruners.BasePruner):  # type: ignore[misc]
    """Prunes the trials ``numbers`` at ``step``, and nothing else."""

    def __init__(self, numbers: set[int], step: int) -> None:
        self.numbers, self.step = numbers, step

    def prune(self, study: Any, trial: Any) -> bool:
        return trial.number in self.numbers and trial.last_step == self.step


def _study(**kwargs: Any) -> Any:
    options = {"pruner": optuna.pruners.NopPruner(), **kwargs}
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), **options)


def _run(study: Any, build: Any = _build, **kwargs: Any) -> list[dict[str, Any]]:
    options: dict[str, Any] = {"key": "val_loss", "epochs": 4, "n_trials": 7, "slots": 3}
    options.update({"batch_size": 16, "stages": STAGES, "shuffle": False, **kwargs})
    return collect(search_events(study, build, (X, Y), nn.MSELoss(), **options))


def _alone(trial: Any, build: Any, epochs: int, *, shuffle: bool) -> list[float]:
    """The trial's values as its lone epoch_stream run with the generator search gives it."""
    model, optimizer = build(optuna.trial.FixedTrial(trial.params, number=trial.number))
    generator = torch.Generator().manual_seed(trial.number) if shuffle else None
    alone = epoch_stream((X, Y), model, optimizer, nn.MSELoss(), batch_size=16, shuffle=shuffle,
                         generator=generator)  # fmt: skip
    add = validation_loss(VAL, nn.MSELoss())
    return [add(ev)["val_loss"] for ev in islice(alone, epochs)]


def test_every_trial_runs_its_epochs_in_a_slot_that_refills_at_once() -> None:
    study = _study()
    history = _run(study)
    assert len(study.trials) == 7
    assert {t.state for t in study.trials} == {States.COMPLETE}
    # 7 trials x 4 epochs in 3 slots: slots refilled as soon as a trial ends
    assert history[0]["trial"] == [0, 1, 2]
    assert history[4]["trial"] == [3, 4, 5]
    assert history[8]["trial"] == [6]  # the last trial alone: no epoch on an empty slot
    assert len(history) == 12
    assert [ev["trial_step"][0] for ev in history] == [1, 2, 3, 4] * 3
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4]


def test_each_trial_is_told_its_best_value_and_the_epoch_of_it() -> None:
    study = _study()
    history = _run(study)
    seen: dict[int, list[float]] = {}
    for event in history:
        for number, value in zip(event["trial"], event["val_loss"], strict=True):
            if not math.isnan(number) and len(seen.setdefault(number, [])) < 4:
                seen[number].append(value)
    for trial in study.trials:
        values = seen[trial.number]
        assert trial.value == min(values)
        assert list(trial.intermediate_values.values()) == values
        assert trial.user_attrs["best_step"] == values.index(min(values)) + 1
        assert trial.user_attrs["epochs_trained"] == 4


def test_a_maximized_key_is_told_its_largest_value() -> None:
    study = _study(direction="maximize")

    def score(event: dict[str, Any]) -> dict[str, Any]:
        return {"val_score": [-v for v in event["val_loss"]]}

    _run(study, key="val_score", stages=[*STAGES, augment(score)], n_trials=3)
    assert all(t.value == max(t.intermediate_values.values()) for t in study.trials)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_trial_trains_as_it_would_alone_in_any_slot_or_ensemble(shuffle: bool) -> None:
    # Two architectures and pruning at step 2: slots refill with the other width, ensembles
    # with empty slots are rebuilt and merged, so trials move between ensembles mid-run.
    study = _study(pruner=PruneAt({0, 1, 4}, step=2))
    history = _run(study, _two_widths, n_trials=10, shuffle=shuffle, pad=False)
    moved = {n for ev in history for n in ev["trial"] if len(ev["trial"]) == 1} & {
        n for ev in history for n in ev["trial"] if len(ev["trial"]) == 2
    }
    assert moved  # some trial trained in two different ensembles
    for trial in study.trials:
        got = list(trial.intermediate_values.values())
        expected = _alone(trial, _two_widths, len(got), shuffle=shuffle)
        assert got == pytest.approx(expected, rel=1e-5)


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


def test_a_trial_that_trains_all_its_epochs_is_complete_never_pruned() -> None:
    study = _study(pruner=PruneAt(set(range(7)), step=4))  # would prune at the last epoch
    _run(study)
    assert {t.state for t in study.trials} == {States.COMPLETE}
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in study.trials)


def test_no_pruning_with_prune_false() -> None:
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=1e-9))
    _run(study, prune=False, n_trials=3)
    assert {t.state for t in study.trials} == {States.COMPLETE}
    assert all(t.intermediate_values == {} for t in study.trials)


def test_the_first_wave_is_the_pruners_start_up_then_every_slot_opens() -> None:
    study = _study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    history = _run(study, n_trials=8, slots=4)
    assert [len(ev["trial"]) for ev in history[:4]] == [2, 2, 2, 2]  # two trials to the end
    assert len(history[4]["trial"]) == 4  # then every slot
    first = {t.number for t in study.trials if t.datetime_start <= study.trials[1].datetime_start}
    assert first == {0, 1}
    assert {study.trials[0].state, study.trials[1].state} == {States.COMPLETE}


def test_startup_overrides_the_rule_and_zero_opens_every_slot_at_once() -> None:
    study = _study(pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    history = _run(study, n_trials=6, slots=3, startup=0)
    assert len(history[0]["trial"]) == 3


def test_no_trial_is_running_without_training_and_slots_bound_every_ensemble() -> None:
    study = _study(pruner=PruneAt({0, 1, 4}, step=2))
    running: list[int] = []
    members: list[int] = []

    def count(event: dict[str, Any]) -> None:
        running.append(len(study.get_trials(deepcopy=False, states=(States.RUNNING,))))
        members.append(len(event["model"]))

    _run(study, _two_widths, n_trials=10, stages=[*STAGES, tap(count)])
    assert max(running) <= 3
    assert max(members) <= 3
    # every trial asked was trained from its first epoch, each epoch reported once
    for trial in study.trials:
        assert sorted(trial.intermediate_values)[0] == 1


def test_architectures_train_at_once_in_ensembles_of_their_own_stepped_in_turn() -> None:
    study = _study()
    history = _run(study, _two_widths, n_trials=8, slots=4, pad=False)
    assert {t.state for t in study.trials} == {States.COMPLETE}
    widths = {t.number: WIDTHS[t.number] for t in study.trials}
    for event in history:
        assert len({widths[n] for n in event["trial"] if not math.isnan(n)}) == 1
    # the first round steps both architectures: trials 0 and 1 start together
    assert {widths[n] for ev in history[:2] for n in ev["trial"]} == {2, 5}


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


def test_search_returns_the_study_and_this_workers_best_model() -> None:
    pd = pytest.importorskip("pandas")
    from fitstream import collect_pd

    study = _study()
    options = {"key": "val_loss", "epochs": 2, "n_trials": 3, "slots": 2, "batch_size": 32,
               "stages": STAGES}  # fmt: skip
    result = search(study, _build, (X, Y), nn.MSELoss(), **options)
    assert result.study is study
    assert result.best_trial.number == study.best_trial.number == result.best_model_trial
    assert result.best_value == study.best_value
    assert result.best_params == study.best_params
    # the best model holds the weights of its best epoch: its validation loss is the value
    add = validation_loss(VAL, nn.MSELoss())
    assert result.best_model is not None
    assert add({"model": result.best_model})["val_loss"] == pytest.approx(study.best_value)
    frame = collect_pd(search_events(_study(), _build, (X, Y), nn.MSELoss(), **options))
    assert isinstance(frame, pd.DataFrame)
    rows = frame[frame["trial"].notna()]
    assert sorted(rows.groupby("trial")["trial_step"].apply(list).tolist()) == [[1, 2]] * 3
    assert "params_lr" in frame.columns


def test_a_missing_key_is_named_with_the_keys_the_events_have() -> None:
    with pytest.raises(KeyError, match=r"the events must hold 'val_los'.*'train_loss'"):
        _run(_study(), key="val_los")


def test_nan_values_are_left_out_of_the_best_and_all_nan_fails() -> None:
    study = _study()

    def wobble(event: dict[str, Any]) -> dict[str, Any]:
        return {"val_wobble": [math.nan, *event["val_loss"][1:]]}

    _run(study, key="val_wobble", stages=[*STAGES, augment(wobble)], n_trials=3)
    assert [t.state for t in study.trials] == [States.FAIL, States.COMPLETE, States.COMPLETE]
    assert study.trials[0].user_attrs["fail_reason"] == "every value of the key was NaN"


def test_a_grid_study_stops_when_its_grid_is_used_up() -> None:
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"lr": [0.01, 0.03, 0.1]}))
    _run(study, n_trials=10, slots=2)  # n_trials above the grid: the grid decides
    assert sorted(t.params["lr"] for t in study.trials) == [0.01, 0.03, 0.1]
    assert {t.state for t in study.trials} == {States.COMPLETE}


# -- MLPs of several widths in one ensemble --------------------------------------------------


def test_mlps_of_several_widths_train_in_one_ensemble_each_as_it_would_alone() -> None:
    study = _study(pruner=PruneAt({0, 1, 4}, step=2))
    history = _run(study, _two_widths, n_trials=10, shuffle=True)
    assert max(len(ev["trial"]) for ev in history) == 3  # widths 2 and 5 together
    assert any({WIDTHS[n] for n in ev["trial"]} == {2, 5} for ev in history)
    for trial in study.trials:
        got = list(trial.intermediate_values.values())
        expected = _alone(trial, _two_widths, len(got), shuffle=True)
        assert got == pytest.approx(expected, rel=1e-5)


def test_a_padded_trial_hands_back_its_own_model_with_its_trained_weights() -> None:
    def narrow(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(trial.number)
        width = 2 if trial.number else 5  # trial 0 makes the carrier wide
        lr = trial.suggest_float("lr", 1e-2, 1e-1, log=True)
        model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
        return model, torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-3)

    study = _study(direction="minimize")
    result = search(study, narrow, (X, Y), nn.MSELoss(), key="val_loss", epochs=4, n_trials=4,
                    slots=4, batch_size=16, stages=STAGES, shuffle=False)  # fmt: skip
    best = study.best_trial
    model = result.best_model
    assert model is not None
    assert model[0].weight.shape == (2 if best.number else 5, 3)
    add = validation_loss(VAL, nn.MSELoss())
    assert add({"model": model})["val_loss"] == pytest.approx(best.value, rel=1e-5)


def test_the_padded_units_stay_exactly_zero() -> None:
    from fitstream.experiments.search.carriers import carrier_of, cut_state

    widest: dict[Any, Any] = {}
    wide = nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1))
    carrier_of(wide, torch.optim.SGD(wide.parameters(), lr=0.1), widest, 1)
    for kind, options in [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                              "weight_decay": 0.01}),
                          (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True}),
                          (torch.optim.AdamW, {"lr": 0.01, "maximize": False})]:  # fmt: skip
        torch.manual_seed(0)
        small = nn.Sequential(nn.Linear(3, 2), nn.GELU(), nn.Linear(2, 3), nn.ReLU(),
                              nn.Linear(3, 1))  # fmt: skip
        carrier = carrier_of(small, kind(small.parameters(), **options), widest, 1)
        assert carrier is not None
        alone = epoch_stream((X, Y), small, kind(small.parameters(), **options), nn.MSELoss(),
                             batch_size=16, shuffle=False)  # fmt: skip
        padded = epoch_stream((X, Y), carrier.model, carrier.optimizer, nn.MSELoss(),
                              batch_size=16, shuffle=False)  # fmt: skip
        for a, b in islice(zip(alone, padded, strict=False), 5):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        trained = cut_state(carrier.model, small)
        for name, tensor in carrier.model.state_dict().items():
            inside = tuple(slice(0, n) for n in small.state_dict()[name].shape)
            rest = tensor.clone()
            rest[inside] = 0
            assert torch.count_nonzero(rest) == 0, (kind.__name__, name)
            torch.testing.assert_close(trained[name], small.state_dict()[name], rtol=1e-5,
                                       atol=1e-7)  # fmt: skip


def test_models_the_padding_does_not_pay_for_or_fit_train_as_they_are() -> None:
    from fitstream.experiments.search.carriers import carrier_of, family_of

    widest: dict[Any, Any] = {}
    big = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    assert carrier_of(big, torch.optim.Adam(big.parameters()), widest, 80) is not None
    small = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    # 3,600 parameters more: padded in 16 slots, not in 80 (two large ensembles do better)
    assert carrier_of(small, torch.optim.Adam(small.parameters()), widest, 16) is not None
    assert carrier_of(small, torch.optim.Adam(small.parameters()), widest, 80) is None
    for model in (nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1)),  # f(0) != 0
                  nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 1)),  # random masks
                  nn.Linear(3, 1)):  # fmt: skip
        assert family_of(model, torch.optim.SGD(model.parameters(), lr=0.1)) is None
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    rms = torch.optim.RMSprop(model.parameters())
    assert family_of(model, rms) is None  # only the optimizers whose zero units stay zero
