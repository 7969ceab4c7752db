"""``prune``: each epoch reported to an Optuna trial; a pruned run ends, a pruned member freezes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import augment, ensemble_stream, pipe, prune, take

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(upper: float = 1.0) -> Any:
    return optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=upper))


def _intermediate(study: Any, trial: Any) -> dict[int, float]:
    return dict(study._storage.get_trial(trial._trial_id).intermediate_values)


def test_each_event_is_reported_at_its_step_and_the_pruned_run_ends_there(
    counting_source: Any,
) -> None:
    study = _study()
    trial = study.ask()
    values = {1: 0.5, 2: 0.7, 3: 1.5, 4: 0.1}
    source = counting_source(fields=lambda i: {"val_loss": values[i]})
    seen: list[int] = []
    events = pipe(source, prune(trial, "val_loss"))
    with pytest.raises(optuna.TrialPruned, match=r"trial 0 pruned at step 3, where val_loss=1.5"):
        seen.extend(event["step"] for event in events)
    assert seen == [1, 2]
    assert source.pulled == 3  # no epoch after the pruned one
    assert source.closed
    assert _intermediate(study, trial) == {1: 0.5, 2: 0.7, 3: 1.5}


def test_study_optimize_records_the_trial_as_pruned(counting_source: Any) -> None:
    study = _study(upper=0.3)

    def objective(trial: Any) -> float:
        source = counting_source(fields=lambda i: {"val_loss": 1 / i})
        return min(ev["val_loss"] for ev in pipe(source, prune(trial, "val_loss"), take(5)))

    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert study.trials[0].intermediate_values == {1: 1.0}


def test_every_reports_every_nth_event_only(counting_source: Any) -> None:
    study = _study(upper=100)
    trial = study.ask()
    list(
        pipe(
            counting_source(n=6, fields=lambda i: {"val_loss": float(i)}),
            prune(trial, "val_loss", every=3),
        )
    )
    assert _intermediate(study, trial) == {3: 3.0, 6: 6.0}


def test_a_nan_is_reported_as_nan_and_optunas_pruner_prunes_it(counting_source: Any) -> None:
    study = _study(upper=10)
    trial = study.ask()
    source = counting_source(fields=lambda i: {"val_loss": float("nan") if i == 2 else 1.0})
    with pytest.raises(optuna.TrialPruned, match="at step 2, where val_loss=nan"):
        list(pipe(source, prune(trial, "val_loss")))
    assert math.isnan(_intermediate(study, trial)[2])


def _ensemble(k: int) -> Any:
    torch.manual_seed(0)
    X, y = torch.randn(32, 2), torch.randn(32, 1)
    models = [nn.Linear(2, 1) for _ in range(k)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01) for m in models]
    return ensemble_stream((X, y), models, optimizers, nn.MSELoss(), batch_size=8)


def test_on_an_ensemble_pruned_members_freeze_and_their_trials_are_told_pruned() -> None:
    study = _study(upper=1.0)
    trials = [study.ask() for _ in range(3)]
    scores = {1: [0.5, 0.5, 0.5], 2: [0.4, 2.0, 0.4], 3: [0.3, 5.0, 0.3], 4: [2.0, 5.0, 0.2]}
    pulled = []

    def score(event: dict[str, Any]) -> dict[str, Any]:
        pulled.append(event["step"])
        return {"val_loss": scores[event["step"]]}

    events = pipe(_ensemble(3), augment(score), prune(trials, "val_loss", study=study), take(4))
    active = [tuple(ev["model"].active) for ev in events]
    assert active == [
        (True, True, True),
        (True, False, True),
        (True, False, True),
        (False, False, True),
    ]
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.RUNNING]  # fmt: skip
    # member 1 reported nothing after it was pruned at step 2
    assert _intermediate(study, trials[1]) == {1: 0.5, 2: 2.0}
    assert _intermediate(study, trials[2]) == {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2}
    assert pulled == [1, 2, 3, 4]


def test_the_ensemble_stream_ends_without_another_epoch_once_every_member_is_pruned() -> None:
    study = _study(upper=1.0)
    trials = [study.ask() for _ in range(2)]
    pulled = []

    def score(event: dict[str, Any]) -> dict[str, Any]:
        pulled.append(event["step"])
        return {"val_loss": [0.5, 3.0] if event["step"] == 1 else [3.0, 3.0]}

    stage = prune(trials, "val_loss", study=study)
    steps = [ev["step"] for ev in pipe(_ensemble(2), augment(score), stage, take(10))]
    assert steps == [1, 2]
    assert pulled == [1, 2]
    assert {t.state for t in study.get_trials()} == {optuna.trial.TrialState.PRUNED}


def test_a_missing_key_lists_the_keys_the_event_has(counting_source: Any) -> None:
    trial = _study().ask()
    with pytest.raises(
        KeyError, match=r"prune: the event has no key 'val_los'; its keys are 'step', 'val_loss'"
    ):
        list(pipe(counting_source(n=2), prune(trial, "val_los")))


BAD = [
    (
        lambda t, s: prune(t, "val_loss", every=0),
        ValueError,
        r"'every' must be a positive int, got 0",
    ),
    (lambda t, s: prune(t, "val_loss", every=1.5), TypeError, r"'every' must be a positive int"),
    (lambda t, s: prune("trial", "val_loss"), TypeError, r"'trial' must be an optuna Trial.*str"),
    (lambda t, s: prune(None, "val_loss"), TypeError, r"'trial' is None, which only the non-zero"),
    (lambda t, s: prune([t, t], "val_loss", study=s), ValueError, r"repeats a trial"),
    (lambda t, s: prune([t], "val_loss"), ValueError, r"a list of trials .* needs study="),
    (lambda t, s: prune([{"step": 1}], [], "val_loss", study=s), ValueError, r"got none"),
    (lambda t, s: prune(t, 3), TypeError, r"'key' must be a non-empty str"),
    (lambda t, s: prune(t, "val_loss", study="s"), TypeError, r"'study' must be an optuna Study"),
    # the empty list of trials, not an empty stream: refused in prune's own words
    (lambda t, s: prune([], "val_loss", study=s), ValueError, r"'trial' as a list .* got none"),
    (lambda t, s: prune(s.trials[0], "val_loss"), TypeError,
     r"'trial' is a FrozenTrial \(trial 0\), a record of a trial that takes no reports"),
    (lambda t, s: prune([s.trials[0]], "val_loss", study=s), TypeError,
     r"'trial\[0\]' is a FrozenTrial"),
    (lambda t, s: prune([t], "val_loss", study=_study()), ValueError,
     r"'trial\[0\]' \(trial 0\) belongs to the study '.*', not to study="),
    (lambda t, s: prune(t, "val_loss", study=_study()), ValueError, r"belongs to the study"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_arguments_are_refused_at_the_call(call: Any, error: Any, match: str) -> None:
    study = _study()
    with pytest.raises(error, match=match):
        call(study.ask(), study)


def test_a_trial_count_that_is_not_the_member_count_is_refused_at_the_first_event() -> None:
    study = _study()
    trials = [study.ask() for _ in range(2)]
    events = pipe(_ensemble(3), augment(lambda ev: {"val_loss": [1.0] * 3}),
                  prune(trials, "val_loss", study=study))  # fmt: skip
    with pytest.raises(ValueError, match=r"'trial' holds 2 trials for an ensemble of 3 members"):
        next(events)
    single = pipe(_ensemble(3), augment(lambda ev: {"val_loss": [1.0] * 3}),
                  prune(study.ask(), "val_loss"))  # fmt: skip
    with pytest.raises(ValueError, match=r"holds one value per member of an ensemble"):
        next(single)


@pytest.mark.parametrize("state", ["COMPLETE", "PRUNED", "FAIL"])
def test_a_finished_trial_is_refused_at_the_call_naming_it_and_its_state(state: str) -> None:
    study = _study()
    trial = study.ask()
    study.tell(
        trial, 1.0 if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state)
    )
    with pytest.raises(ValueError, match=rf"'trial' \(trial 0\) is already {state}; a finished"):
        prune(trial, "val_loss")
    with pytest.raises(ValueError, match=rf"'trial\[0\]' \(trial 0\) is already {state}"):
        prune([trial], "val_loss", study=study)
