"""early_stop, ema and best_model on ensemble events: per-member values, freezing, errors.

The ensemble is the suite's stand-in (``stand_in_ensemble`` in conftest): every event trains
each active member once (its weights move by +1), so a member's weights tell which event it
last trained in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest
import torch
from torch import nn

from fitstream import best_model, early_stop, ema, pipe, tap
from fitstream._internal.lookup import metric_value

NAN = math.nan


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- early_stop ---------------------------------------------------------------------------------


def test_early_stop_counts_patience_per_member_and_ends_when_all_stopped(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(3)
    losses = [
        [5.0, 5.0, 5.0],
        [4.0, 4.0, 6.0],  # member 2: stale 1
        [3.0, 4.5, 6.0],  # member 1: stale 1; member 2: stale 2 -> frozen at step 3
        [2.0, 4.1, 0.0],  # member 1: stale 2 -> frozen at step 4; member 2 ignored
        [2.0, 1.0, 0.0],  # member 0: stale 1; member 1 ignored
        [2.5, 1.0, 0.0],  # member 0: stale 2 -> frozen at step 6: every member stopped
        [0.0, 0.0, 0.0],  # never pulled
    ]
    source = ensemble_events(ensemble, {"val_loss": losses})
    seen = []
    for event in early_stop(source, key="val_loss", patience=2):
        seen.append((event["step"], event["model"].active))
    assert seen == [
        (1, [True, True, True]),
        (2, [True, True, True]),
        (3, [True, True, False]),  # frozen before the event is passed on
        (4, [True, False, False]),
        (5, [True, False, False]),
        (6, [False, False, False]),
    ]
    assert ensemble.freezes == [2, 1, 0]  # each member frozen once, later values ignored
    assert source.pulled == 6
    assert source.closed


def test_a_frozen_member_keeps_the_weights_of_its_event(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    losses = [[1.0, 1.0], [0.5, 2.0], [0.4, 2.0], [0.3, 2.0], [0.2, 2.0], [0.1, 2.0]]
    source = ensemble_events(ensemble, {"val_loss": losses})
    at_freeze: dict[str, torch.Tensor] = {}
    for event in early_stop(source, key="val_loss", patience=2):
        if event["step"] == 3:  # member 1 ran out of patience here
            at_freeze = weights(event["model"].members[1])
    assert ensemble.freezes == [1]
    assert source.pulled == 6  # member 0 kept improving: the stream ran to its end
    assert same(weights(ensemble.members[1]), at_freeze)
    assert not same(weights(ensemble.members[0]), at_freeze)


@pytest.mark.parametrize(
    "case",
    [
        # max: member 0 rises, member 1 flat -> member 1 stops at step 3, member 0 at step 5
        ("max", 0.0, [[0.1, 0.5], [0.2, 0.5], [0.3, 0.5], [0.3, 0.9], [0.3, 0.9]], [5, 3]),
        # min_delta is absolute, against each member's own best: steps of 0.05 do not count
        ("min", 0.1, [[1.0, 1.0], [0.95, 0.5], [0.9, 0.45], [0.85, 0.42], [0.1, 0.4]], [3, 4]),
    ],
)
def test_mode_and_min_delta_apply_to_each_member(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any], case: Any
) -> None:
    mode, min_delta, values, stops = case
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"acc": values})
    stopped_at: dict[int, int] = {}
    for event in early_stop(source, key="acc", patience=2, mode=mode, min_delta=min_delta):
        for member, active in enumerate(event["model"].active):
            if not active:
                stopped_at.setdefault(member, event["step"])
    assert [stopped_at.get(m) for m in range(2)] == stops


def test_nan_counts_against_a_member_and_never_becomes_its_best(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    losses = [[NAN, 1.0], [NAN, 0.9], [0.5, 0.8], [0.4, 0.7]]
    source = ensemble_events(ensemble, {"val_loss": losses})
    steps = [ev["step"] for ev in early_stop(source, key="val_loss", patience=2)]
    assert ensemble.freezes == [0]
    assert steps == [1, 2, 3, 4]


def test_a_member_frozen_elsewhere_counts_as_stopped(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    ensemble.freeze(1)  # e.g. by an earlier early_stop on another metric
    losses = [[1.0, 9.0], [0.5, 0.0], [0.5, 0.0], [0.5, 0.0], [0.0, 0.0]]
    source = ensemble_events(ensemble, {"val_loss": losses})
    steps = [ev["step"] for ev in early_stop(source, key="val_loss", patience=2)]
    assert steps == [1, 2, 3, 4]
    assert ensemble.freezes == [1, 0]  # member 1 is not frozen a second time
    assert source.pulled == 4


def test_a_replayed_history_stops_per_member_without_freezing(
    counting_source: Any,
) -> None:
    table = [[5, 5], [4, 5], [4, 5], [4, 4], [3, 3]]
    source = counting_source(5, lambda i: {"val_loss": table[i - 1]})
    steps = [ev["step"] for ev in early_stop(source, key="val_loss", patience=2)]
    assert steps == [1, 2, 3, 4]
    assert source.pulled == 4


def test_early_stop_never_pulls_ahead_of_its_consumer(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"val_loss": [[1.0 / i, 1.0 / i] for i in range(1, 20)]})
    stream = early_stop(source, key="val_loss", patience=3)
    assert source.pulled == 0
    assert [ev["step"] for ev in islice(stream, 4)] == [1, 2, 3, 4]
    assert source.pulled == 4


def test_early_stop_closes_the_source_when_it_raises(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"val_loss": [[1.0, 1.0]] * 5}, fail_at=3)
    stream = early_stop(source, key="val_loss", patience=10)
    with pytest.raises(RuntimeError, match="source failed at event 3"):
        list(stream)
    assert source.closed


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (
            [[1.0, 2.0, 3.0]],
            ValueError,
            r"early_stop: the value of 'val_loss' is a list of 3 values but the event's "
            r"ensemble has 2 members",
        ),
        (
            [[1.0, 2.0], 0.5],
            ValueError,
            r"early_stop: the value of 'val_loss' was a list of 2 values in earlier events "
            r"and is one number now",
        ),
        (
            [[1.0, "x"]],
            TypeError,
            r"early_stop: the value of 'val_loss' must be a number or a 0-d tensor, got list",
        ),
    ],
)
def test_early_stop_refuses_values_that_do_not_fit_the_ensemble(
    stand_in_ensemble: Any, values: list[Any], error: type[Exception], match: str
) -> None:
    ensemble = stand_in_ensemble(2)
    events = [{"step": i, "model": ensemble, "val_loss": v} for i, v in enumerate(values, 1)]
    with pytest.raises(error, match=match):
        list(early_stop(events, key="val_loss", patience=5))


def test_a_list_with_a_single_model_is_refused_naming_both() -> None:
    events = [{"step": 1, "model": nn.Linear(1, 1), "val_loss": [0.5, 0.4]}]
    with pytest.raises(
        TypeError,
        match=r"early_stop: the value of 'val_loss' must be a number.*per-member values, which "
        r"needs an ensemble under 'model'.*Linear",
    ):
        list(early_stop(events, key="val_loss", patience=5))


def test_metric_value_says_a_list_is_per_member() -> None:
    with pytest.raises(
        TypeError, match=r"f: the value of 'val_loss' is per-member \(a list of 2 values, one per"
    ):
        metric_value({"val_loss": [0.5, 0.25]}, "val_loss", func="f")


# -- ema ----------------------------------------------------------------------------------------


def test_ema_of_a_per_member_value_is_each_members_own_average(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(3)
    table = [[1.0, 10.0, 0.0], [2.0, 20.0, NAN], [4.0, 5.0, 0.0]]
    smoothed = [
        ev["val_loss_ema"]
        for ev in ema(ensemble_events(ensemble, {"val_loss": table}), "val_loss", decay=0.5)
    ]
    for member in range(3):
        alone = [{"val_loss": row[member]} for row in table]
        expected = [ev["val_loss_ema"] for ev in ema(alone, "val_loss", decay=0.5)]
        got = [row[member] for row in smoothed]
        assert got == pytest.approx(expected, nan_ok=True)
    assert all(isinstance(row, list) and len(row) == 3 for row in smoothed)


def test_ema_per_member_is_lazy_and_leaves_the_input_event(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    source = ensemble_events(ensemble, {"loss": [[1.0, 2.0]] * 10})
    stream = ema(source, "loss", half_life=2)
    first = next(stream)
    assert source.pulled == 1
    assert first["loss_ema"] == [1.0, 2.0]
    assert first["loss"] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([0.5, [1.0, 2.0]], r"ema: the value of 'loss' changed kind between events \(from one"),
        ([[1.0, 2.0], [1.0, 2.0, 3.0]], r"ema: the value of 'loss' changed kind.*2 values to "),
    ],
)
def test_ema_refuses_a_value_that_changes_kind(values: list[Any], match: str) -> None:
    events = [{"step": i, "loss": v} for i, v in enumerate(values, 1)]
    with pytest.raises(ValueError, match=match):
        list(ema(events, "loss", decay=0.5))


# -- best_model ---------------------------------------------------------------------------------


def run_best(ensemble: Any, table: list[list[float]], **kwargs: Any) -> Any:
    best = best_model("val_loss", **kwargs)
    snapshots: list[list[dict[str, torch.Tensor]]] = []
    for step, row in enumerate(table, start=1):
        ensemble.train_epoch()
        snapshots.append([weights(m) for m in ensemble.members])
        best({"step": step, "model": ensemble, "val_loss": row})
    return best, snapshots


def test_best_model_keeps_each_members_best_weights(stand_in_ensemble: Any) -> None:
    ensemble = stand_in_ensemble(3)
    table = [[3.0, 1.0, NAN], [2.0, 2.0, NAN], [2.5, 0.5, NAN], [1.0, 0.5, NAN]]
    best, snapshots = run_best(ensemble, table)
    assert best.members == 3
    assert best.best_step == [4, 3, None]
    assert best.best_value == [1.0, 0.5, None]
    assert same(best.state_dict[0], snapshots[3][0])
    assert same(best.state_dict[1], snapshots[2][1])
    assert best.state_dict[2] is None
    assert "best_step=[4, 3, None]" in repr(best)


def test_best_model_loads_one_member_or_all(stand_in_ensemble: Any) -> None:
    ensemble = stand_in_ensemble(2)
    best, snapshots = run_best(ensemble, [[1.0, 2.0], [0.5, 3.0], [0.7, 4.0]])
    single = nn.Linear(3, 1)
    assert best.load_into(single, member=1) is single
    assert same(weights(single), snapshots[0][1])
    assert best.load_into(ensemble) is ensemble
    assert same(weights(ensemble.members[0]), snapshots[1][0])
    assert same(weights(ensemble.members[1]), snapshots[0][1])
    models = [nn.Linear(3, 1), nn.Linear(3, 1)]
    assert best.load_into(models) is models
    assert same(weights(models[0]), snapshots[1][0])


def test_best_model_per_member_in_a_pipeline_with_early_stop(
    stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    ensemble = stand_in_ensemble(2)
    losses = [[1.0, 1.0], [0.5, 2.0], [0.6, 2.0], [0.7, 2.0], [0.1, 0.0]]
    best = best_model("val_loss", device="cpu")
    steps = [
        ev["step"]
        for ev in pipe(
            ensemble_events(ensemble, {"val_loss": losses}),
            tap(best),
            early_stop(key="val_loss", patience=2),
        )
    ]
    assert steps == [1, 2, 3, 4]
    assert best.best_step == [2, 1]
    # Member 1 froze at step 3; its best (step 1) is two epochs of training behind it.
    live = weights(ensemble.members[1])
    for name, tensor in best.state_dict[1].items():
        assert torch.allclose(tensor + 2, live[name])


def test_best_model_per_member_errors(stand_in_ensemble: Any) -> None:
    ensemble = stand_in_ensemble(2)
    best, _ = run_best(ensemble, [[NAN, 1.0]])
    with pytest.raises(RuntimeError, match=r"best_model: no snapshot of member 0 to load yet"):
        best.load_into(nn.Linear(3, 1), member=0)
    with pytest.raises(ValueError, match=r"best_model: 'member' must be in 0\.\.1 .*got 2"):
        best.load_into(nn.Linear(3, 1), member=2)
    with pytest.raises(TypeError, match=r"best_model: 'member' must be an int, got str"):
        best.load_into(nn.Linear(3, 1), member="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"needs the ensemble or a sequence of 2 modules"):
        best.load_into(nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"was a per-member list of 2 values .* one number now"):
        best({"step": 2, "model": ensemble, "val_loss": 0.5})

    full, _ = run_best(ensemble, [[1.0, 1.0]])
    with pytest.raises(TypeError, match=r"load_into needs a module with load_state_dict.*str"):
        full.load_into(["a", "b"])

    single = best_model("val_loss")
    single({"step": 1, "model": nn.Linear(1, 1), "val_loss": 0.5})
    with pytest.raises(ValueError, match=r"best_model: 'member' is for per-member values"):
        single.load_into(nn.Linear(1, 1), member=0)


# -- the stage contract on ensemble events ------------------------------------------------------

MEMBER_STAGES = {
    "early_stop": lambda: early_stop(key="val_loss", patience=50),
    "ema": lambda: ema("val_loss", decay=0.5),
    "best_model": lambda: tap(best_model("val_loss")),
}
every_member_stage = pytest.mark.parametrize(
    "make", MEMBER_STAGES.values(), ids=MEMBER_STAGES.keys()
)


def falling(n: int, k: int) -> dict[str, list[list[float]]]:
    return {"val_loss": [[1.0 / (i + m) for m in range(k)] for i in range(1, n + 1)]}


@every_member_stage
def test_member_stage_pulls_one_event_per_event_it_emits(
    make: Callable[[], Any], stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    source = ensemble_events(stand_in_ensemble(3), falling(10, 3))
    stream = pipe(source, make())
    assert source.pulled == 0
    assert [ev["step"] for ev in islice(stream, 3)] == [1, 2, 3]
    assert source.pulled == 3
    stream.close()
    assert source.closed


@every_member_stage
def test_member_stage_closes_the_source_and_passes_its_error_on(
    make: Callable[[], Any], stand_in_ensemble: Any, ensemble_events: Callable[..., Any]
) -> None:
    source = ensemble_events(stand_in_ensemble(3), falling(10, 3), fail_at=4)
    stream = pipe(source, make())
    with pytest.raises(RuntimeError, match="source failed at event 4"):
        list(stream)
    assert source.closed
    assert source.pulled == 3


def test_an_ensemble_is_recognised_without_reading_its_hyperparameters() -> None:
    from fitstream import Ensemble
    from fitstream._internal.members import EnsembleLike, ensemble_of, is_ensemble

    ensemble = Ensemble([nn.Linear(2, 1) for _ in range(3)])
    reads: list[int] = []

    def hparams() -> list[dict[str, Any]]:
        reads.append(1)
        return [{} for _ in range(3)]

    ensemble._hparams = hparams
    assert is_ensemble(ensemble)
    assert ensemble_of({"model": ensemble}) is ensemble
    assert not reads
    assert ensemble.hparams == [{}, {}, {}]  # still there when asked
    assert isinstance(ensemble, EnsembleLike)  # the same answer as the protocol's


class _ModuleEnsemble(nn.Module):
    """An ensemble-like module whose members are a submodule, not a class attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.members = nn.ModuleList([nn.Linear(2, 1), nn.Linear(2, 1)])
        self.hparams = [{}, {}]
        self.active = [True, True]

    def freeze(self, member: int) -> None:
        self.active[member] = False

    def __len__(self) -> int:
        return 2


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_ModuleEnsemble(), True),
        (nn.Linear(2, 1), False),
        (None, False),
        ([nn.Linear(2, 1)], False),
        (object(), False),
    ],
)
def test_is_ensemble_agrees_with_the_protocol(obj: Any, expected: bool) -> None:
    from fitstream._internal.members import EnsembleLike, is_ensemble

    assert is_ensemble(obj) is expected
    assert isinstance(obj, EnsembleLike) is expected
