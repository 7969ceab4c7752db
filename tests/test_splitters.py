"""``kfold`` and ``bootstrap``: the members' rows of a cross-validation or a bagged ensemble."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from fitstream import bootstrap, kfold


@pytest.mark.parametrize(("n", "k"), [(10, 2), (10, 3), (203, 5), (7, 7), (100, 10)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_kfold_validation_parts_partition_the_rows_and_differ_by_at_most_one(
    n: int, k: int, shuffle: bool
) -> None:
    splits = kfold(n, k, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    assert len(splits) == k
    held_out = torch.cat([val for _, val in splits])
    assert sorted(held_out.tolist()) == list(range(n))
    sizes = [len(val) for _, val in splits]
    assert max(sizes) - min(sizes) <= 1
    for train, val in splits:
        assert train.dtype == val.dtype == torch.int64
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert sorted(train.tolist() + val.tolist()) == list(range(n))


def test_kfold_without_shuffle_holds_out_consecutive_rows() -> None:
    assert [val.tolist() for _, val in kfold(7, 3, shuffle=False)] == [[0, 1, 2], [3, 4], [5, 6]]


def test_kfold_is_reproducible_from_its_generator_and_shuffles() -> None:
    first = kfold(50, 5, generator=torch.Generator().manual_seed(1))
    again = kfold(50, 5, generator=torch.Generator().manual_seed(1))
    other = kfold(50, 5, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    assert first[0][1].tolist() != list(range(10))


def test_stratified_folds_keep_the_class_proportions() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    splits = kfold(100, 5, stratify=labels, generator=torch.Generator().manual_seed(0))
    for _, val in splits:
        counts = Counter(labels[val].tolist())
        assert counts == {0: 12, 1: 6, 2: 2}
    assert sorted(torch.cat([v for _, v in splits]).tolist()) == list(range(100))


def test_stratified_folds_of_uneven_classes_stay_within_a_row_per_class() -> None:
    labels = [0] * 7 + [1] * 5
    splits = kfold(12, 3, stratify=labels, shuffle=False)
    for cls, total in ((0, 7), (1, 5)):
        shares = [sum(labels[i] == cls for i in val.tolist()) for _, val in splits]
        assert sum(shares) == total
        assert max(shares) - min(shares) <= 1
    sizes = [len(val) for _, val in splits]
    assert max(sizes) - min(sizes) <= 1


def test_bootstrap_draws_n_rows_with_replacement_and_the_rest_out_of_bag() -> None:
    samples = bootstrap(500, 3, generator=torch.Generator().manual_seed(0))
    assert len(samples) == 3
    for train, oob in samples:
        assert len(train) == 500
        assert train.dtype == oob.dtype == torch.int64
        assert len(set(train.tolist())) < 500  # some rows repeat
        assert set(oob.tolist()) == set(range(500)) - set(train.tolist())
        assert 0.3 < len(oob) / 500 < 0.45  # about 1/e never drawn
    assert not torch.equal(samples[0][0], samples[1][0])
    again = bootstrap(500, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[2][0], samples[2][0])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: kfold(10, 1), ValueError, r"kfold: 'k' must be at least 2.*got 1"),
        (lambda: kfold(3, 4), ValueError, r"kfold: 'k' must be at most n=3.*got 4"),
        (lambda: kfold(10, 2.0), TypeError, r"kfold: 'k' must be a positive int, got float"),
        (lambda: kfold(0, 2), ValueError, r"kfold: 'n' must be a positive int, got 0"),
        (
            lambda: kfold(10, 2, shuffle="yes"),
            TypeError,
            r"kfold: 'shuffle' must be True or False, got str: 'yes'",
        ),
        (lambda: kfold(10, 2, generator=3), TypeError, r"kfold: 'generator' must be"),
        (lambda: kfold(10, 2, stratify=[0, 1]), ValueError, r"one label per row, n=10.*\(2,\)"),
        (lambda: kfold(4, 2, stratify=[0.5] * 4), TypeError, r"integer class labels.*float"),
        (lambda: kfold(4, 2, stratify="abcd"), TypeError, r"'stratify' must be a 1-D tensor"),
        (lambda: bootstrap(10, 0), ValueError, r"bootstrap: 'k' must be a positive int, got 0"),
        (lambda: bootstrap(True, 2), TypeError, r"bootstrap: 'n' must be a positive int"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    call: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()
