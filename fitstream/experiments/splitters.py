"""Row splits for experiments: k-fold cross-validation and bootstrap samples.

Each splitter returns one ``(train_rows, held_out_rows)`` pair of int64 index tensors per
member, the form :func:`~fitstream.ensemble_stream`'s ``rows`` and
:func:`~fitstream.validation_loss`'s ``rows`` take: ``rows=[train for train, _ in splits]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._internal.checks import check_bool, check_generator, check_positive_int, describe

__all__ = ["bootstrap", "kfold"]


def _check_count(n: object, k: object, *, func: str) -> tuple[int, int]:
    check_positive_int(n, func=func, arg="n")
    check_positive_int(k, func=func, arg="k")
    assert isinstance(n, int)
    assert isinstance(k, int)
    return n, k


def kfold(
    n: int,
    k: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    stratify: Sequence[int] | torch.Tensor | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``range(n)`` into ``k`` folds; return ``(train_rows, val_rows)`` for each fold.

    The ``k`` validation parts partition ``range(n)``: every row is held out exactly once, and
    the parts' sizes differ by at most one (the first ``n % k`` folds have one row more). Fold
    ``i`` trains on every row outside its validation part. Both tensors are int64 and sorted,
    so a fold's rows keep the data's order (an :func:`~fitstream.ensemble_stream` member with
    ``shuffle=True`` visits them in its own random order each epoch).

    With ``shuffle`` the rows are dealt to folds in the order of one ``torch.randperm(n)``
    drawn from ``generator``; without, fold 0 holds out the first rows, fold 1 the next, as
    scikit-learn's ``KFold(shuffle=False)`` does. With ``stratify`` (one class label per row)
    the rows of each class are dealt to the folds in turn, so each fold holds out its share
    of every class (class proportions kept to within one row per class), as
    ``StratifiedKFold`` aims to.

    Args:
        n: The number of rows, e.g. ``len(X)``.
        k: The number of folds, from 2 to ``n``.
        shuffle: Whether to deal the rows in a random order.
        generator: Random source for the order, for reproducible folds.
        stratify: Class labels, one per row (a 1-D integer tensor or a sequence of ints).

    Returns:
        ``k`` pairs ``(train_rows, val_rows)``.

    Raises:
        TypeError: ``n`` or ``k`` is not an int, ``shuffle`` not a bool, ``generator`` not a
            ``torch.Generator``, or ``stratify`` not integer labels.
        ValueError: ``k < 2``, ``k > n``, or ``stratify`` does not hold ``n`` labels (or is
            on the meta device).

    Example:
        Five rows in two folds, without shuffling: the first fold holds out three rows.

        >>> [(train.tolist(), val.tolist()) for train, val in kfold(5, 2, shuffle=False)]
        [([3, 4], [0, 1, 2]), ([0, 1, 2], [3, 4])]
        >>> splits = kfold(10, 3, generator=torch.Generator().manual_seed(0))
        >>> sorted(torch.cat([val for _, val in splits]).tolist()) == list(range(10))
        True
        >>> [len(val) for _, val in splits]
        [4, 3, 3]

        Stratified: each fold holds out two rows of class 0 and one of class 1.

        >>> labels = [0, 0, 0, 0, 1, 1]
        >>> splits = kfold(6, 2, stratify=labels, shuffle=False)
        >>> [[labels[i] for i in val] for _, val in splits]
        [[0, 0, 1], [0, 0, 1]]
    """
    func = "kfold"
    n, k = _check_count(n, k, func=func)
    check_bool(shuffle, func=func, arg="shuffle")
    check_generator(generator, torch.device("cpu"), func=func)
    if k < 2:
        raise ValueError(
            f"{func}: 'k' must be at least 2 (one fold held out, one trained), got {k}"
        )
    if k > n:
        raise ValueError(f"{func}: 'k' must be at most n={n} (each fold holds out a row), got {k}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    fold = torch.empty(n, dtype=torch.int64)
    if stratify is None:
        # contiguous parts of the order: the first n % k folds get one row more
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        fold[order] = torch.repeat_interleave(torch.arange(k), torch.tensor(sizes))
    else:
        labels = _check_labels(stratify, n, func=func)[order]
        dealt = 0  # deal each class's rows to the folds in turn, continuing where the last ended
        for value in torch.unique(labels).tolist():
            members = order[labels == value]
            fold[members] = (torch.arange(members.numel()) + dealt) % k
            dealt += members.numel()
    everything = torch.arange(n)
    return [(everything[fold != i], everything[fold == i]) for i in range(k)]


def _check_labels(stratify: object, n: int, *, func: str) -> torch.Tensor:
    if isinstance(stratify, torch.Tensor):
        if stratify.device.type == "meta":
            raise ValueError(
                f"{func}: 'stratify' is a tensor on the meta device, which has a shape "
                f"{tuple(stratify.shape)} but no labels; give the labels themselves"
            )
        labels = stratify.detach().cpu()
    elif isinstance(stratify, Sequence) and not isinstance(stratify, str | bytes):
        try:
            labels = torch.as_tensor(list(stratify))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{func}: 'stratify' must hold one integer class label per row, got "
                f"{describe(stratify)}"
            ) from exc
    else:
        raise TypeError(
            f"{func}: 'stratify' must be a 1-D tensor or a sequence of class labels, got "
            f"{describe(stratify)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(
            f"{func}: 'stratify' must hold integer class labels, got dtype {labels.dtype}"
        )
    if labels.dim() != 1 or labels.numel() != n:
        raise ValueError(
            f"{func}: 'stratify' must hold one label per row, n={n}, got shape "
            f"{tuple(labels.shape)}"
        )
    return labels


def bootstrap(
    n: int, k: int, *, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Draw ``k`` bootstrap samples of ``range(n)``: ``(train_rows, out_of_bag_rows)`` each.

    A sample's ``train_rows`` are ``n`` rows drawn with replacement (some rows repeat, about
    37 % are never drawn); its ``out_of_bag_rows`` are the rows never drawn, sorted, for an
    honest score of the member trained on the sample. The K samples are drawn one after the
    other from ``generator`` (``torch.randint``). Out-of-bag rows can be empty only for tiny
    ``n``; :func:`~fitstream.validation_loss` refuses an empty part, so check it there.

    Args:
        n: The number of rows.
        k: The number of samples (members), at least 1.
        generator: Random source, for reproducible samples.

    Returns:
        ``k`` pairs of int64 tensors.

    Raises:
        TypeError: ``n`` or ``k`` is not an int, or ``generator`` not a ``torch.Generator``.
        ValueError: ``n`` or ``k`` is below 1.

    Example:
        >>> samples = bootstrap(6, 2, generator=torch.Generator().manual_seed(0))
        >>> [len(train) for train, _ in samples]
        [6, 6]
        >>> train, oob = samples[0]
        >>> set(oob.tolist()).isdisjoint(train.tolist())
        True
        >>> sorted(set(train.tolist()) | set(oob.tolist()))
        [0, 1, 2, 3, 4, 5]
    """
    func = "bootstrap"
    n, k = _check_count(n, k, func=func)
    check_generator(generator, torch.device("cpu"), func=func)
    out = []
    for _ in range(k):
        drawn = torch.randint(0, n, (n,), generator=generator)
        seen = torch.zeros(n, dtype=torch.bool)
        seen[drawn] = True
        out.append((drawn, torch.arange(n)[~seen]))
    return out
