"""``summarize``: members grouped by setting, judged by the group's mean curve (worked by hand)."""

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
    collect_jsonl,
    collect_pd,
    ensemble_stream,
    kfold,
    pipe,
    summarize,
    take,
    validation_loss,
)

pd = pytest.importorskip("pandas")

HPARAMS = [
    {"lr": 0.1, "fold": 0},
    {"lr": 0.1, "fold": 1},
    {"lr": 0.1, "fold": 2},
    {"lr": 0.01, "fold": 0},
    {"lr": 0.01, "fold": 1},
]


def _history() -> list[dict[str, Any]]:
    # Groups of different sizes (3 and 2 members); member 1 is frozen at step 2 (its value
    # there, 0.2, is carried to steps 3 and 4, whatever the records say after).
    return [
        {"step": 1, "val_loss": [0.9, 0.8, 1.0, 1.2, 1.0], "active": [True] * 5,
         "hparams": HPARAMS, "val_acc": [0.5] * 5},
        {"step": 2, "val_loss": [0.6, 0.2, 0.7, 0.8, 0.6],
         "active": [True, False, True, True, True]},
        {"step": 3, "val_loss": [0.3, 9.0, 0.6, 0.5, 0.3],
         "active": [True, False, True, True, True]},
        {"step": 4, "val_loss": [0.4, 9.0, 0.4, 0.2, 0.8],
         "active": [True, False, True, True, True]},
    ]  # fmt: skip


def test_the_numbers_worked_out_by_hand() -> None:
    table = summarize(_history(), by="lr", key="val_loss")
    # lr=0.1, members 0, 1 (carried 0.2 from step 2), 2:
    #   step 1: (0.9 + 0.8 + 1.0) / 3 = 0.9      step 2: (0.6 + 0.2 + 0.7) / 3 = 0.5
    #   step 3: (0.3 + 0.2 + 0.6) / 3 = 0.3667   step 4: (0.4 + 0.2 + 0.4) / 3 = 0.3333 <- best
    #   at step 4: mean 1/3, std sqrt(((0.4-1/3)^2 * 2 + (0.2-1/3)^2) / 3) = 0.0943
    # lr=0.01, members 3, 4:
    #   step 1: 1.1, step 2: 0.7, step 3: 0.4 <- best, step 4: 0.5; at step 3: mean 0.4, std 0.1
    assert table["lr"].tolist() == [0.1, 0.01]  # best mean first
    first, second = table.iloc[0], table.iloc[1]
    assert first["n"] == 3
    assert second["n"] == 2
    assert first["best_step"] == 4
    assert second["best_step"] == 3
    assert first["mean"] == pytest.approx(1 / 3)
    assert first["std"] == pytest.approx(
        math.sqrt(((0.4 - 1 / 3) ** 2 * 2 + (0.2 - 1 / 3) ** 2) / 3)
    )
    assert second["mean"] == pytest.approx(0.4)
    assert second["std"] == pytest.approx(0.1)
    assert [first[s] for s in (1, 2, 3, 4)] == pytest.approx([0.9, 0.5, 1.1 / 3, 1 / 3])
    assert [second[s] for s in (1, 2, 3, 4)] == pytest.approx([1.1, 0.7, 0.4, 0.5])
    assert first["member_best"] == pytest.approx([0.3, 0.2, 0.4])  # each member's own best
    assert second["member_best"] == pytest.approx([0.2, 0.3])
    assert first["members"] == [0, 1, 2]
    assert list(table.columns[:11]) == ["lr", "n", "best_step", "mean", "std", "sem", "diff",
                                        "diff_sem", "best_at_end", "member_best",
                                        "members"]  # fmt: skip


def test_grouping_by_several_names_and_a_given_mode() -> None:
    table = summarize(_history(), by=["lr", "fold"], key="val_loss", mode="max")
    assert len(table) == 5
    assert set(table["n"]) == {1}
    best = table.iloc[0]
    assert (best["lr"], best["fold"], best["best_step"], best["mean"]) == (0.01, 0, 1, 1.2)
    assert math.isnan(table.iloc[0]["std"]) is False
    assert table.iloc[0]["std"] == 0.0  # one member: no spread (ddof=0)


def test_a_max_metric_is_inferred_from_its_name() -> None:
    history = _history()
    history[1]["val_acc"] = [0.6, 0.9, 0.6, 0.1, 0.1]
    table = summarize(history, by="lr", key="val_acc")
    assert table["lr"].tolist() == [0.1, 0.01]
    assert table.iloc[0]["best_step"] == 2  # only steps 1 and 2 have val_acc


def test_the_same_from_collect_pd_and_a_jsonl_file_of_a_real_ensemble(tmp_path: Any) -> None:
    X, y = torch.randn(90, 4), torch.randn(90, 1)
    splits = kfold(90, 3, generator=torch.Generator().manual_seed(0))
    members = [(lr, f) for lr in (0.1, 0.01) for f in range(3)]

    def events() -> Any:
        torch.manual_seed(0)
        models = [nn.Linear(4, 1) for _ in members]
        optimizers = [
            torch.optim.SGD(m.parameters(), lr=lr)
            for m, (lr, _) in zip(models, members, strict=True)
        ]
        return pipe(
            ensemble_stream((X, y), models, optimizers, nn.MSELoss(), batch_size=16,
                            rows=[splits[f][0] for _, f in members],
                            hparams=[{"fold": f} for _, f in members], shuffle=False),
            augment(validation_loss((X, y), nn.MSELoss(), rows=[splits[f][1] for _, f in members])),
            take(5),
        )  # fmt: skip

    from_records = summarize(collect(events()), by="lr", key="val_loss")
    from_frame = summarize(collect_pd(events()), by="lr", key="val_loss")
    collect_jsonl(events(), tmp_path / "cv.jsonl")
    import json

    lines = [json.loads(line) for line in (tmp_path / "cv.jsonl").read_text().splitlines()]
    from_file = summarize(lines, by="lr", key="val_loss")
    live = summarize(list(islice(events(), 5)), by="lr", key="val_loss")
    columns = ["lr", "n", "best_step", "mean", "std"]
    for other in (from_frame, from_file, live):
        pd.testing.assert_frame_equal(
            from_records[columns].reset_index(drop=True), other[columns].reset_index(drop=True),
            check_dtype=False, check_column_type=False, rtol=1e-6,
        )  # fmt: skip
    assert from_records["n"].tolist() == [3, 3]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"by": "lrr"}, KeyError, r"'by' names \['lrr'\].*the members have \['fold', 'lr'\]"),
        ({"key": "val_los"}, KeyError, r"no record of the history has the key 'val_los'.*'val_lo"),
        ({"key": "wobble"}, ValueError, r"cannot tell .* whether 'wobble'.*mode='min'.*mode='max'"),
        ({"mode": "lowest"}, ValueError, r"'mode' must be 'min', 'max' or None, got 'lowest'"),
        ({"by": []}, TypeError, r"'by' must be a hyperparameter name or a non-empty list"),
        ({"by": 3}, TypeError, r"'by' must be"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_naming_them(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {"by": "lr", "key": "val_loss", **kwargs}
    history = _history()
    history[0]["wobble"] = [1.0] * 5
    with pytest.raises(error, match=match):
        summarize(history, **arguments)


@pytest.mark.parametrize(
    ("history", "error", "match"),
    [
        ([], ValueError, r"'history' is empty"),
        ("runs/cv.jsonl", TypeError, r"'history' must be an ensemble's history"),
        ([{"step": 1, "val_loss": 0.5}], ValueError, r"no members' 'hparams'"),
        ([{"step": 1, "val_loss": [0.5], "hparams": [{"lr": 0.1}, {"lr": 0.2}]}], ValueError,
         r"record 0's 'val_loss' must be a list of one value per member \(2\)"),
        ([3], TypeError, r"history\[0\] must be an event dict, got int"),
    ],
)  # fmt: skip
def test_histories_that_are_not_an_ensembles_are_refused(
    history: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        summarize(history, by="lr", key="val_loss")
