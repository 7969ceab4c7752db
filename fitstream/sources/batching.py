"""Mini-batches over in-memory tensors: shuffle once, then hand out slice views."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .._internal.checks import (
    check_bool,
    check_generator,
    check_one_device,
    check_positive_int,
    check_tensor_data,
)
from .._internal.rows import check_rows

__all__ = ["iter_batches", "steps_per_epoch"]


def batch_slices(n_samples: int, batch_size: int) -> list[tuple[slice, int]]:
    """Return ``(slice, size)`` for each batch of ``n_samples`` rows; the last may be short.

    Example:
        >>> batch_slices(5, 2)
        [(slice(0, 2, None), 2), (slice(2, 4, None), 2), (slice(4, 5, None), 1)]
    """
    return [
        (slice(start, min(start + batch_size, n_samples)), min(batch_size, n_samples - start))
        for start in range(0, n_samples, batch_size)
    ]


def shuffled(
    tensors: tuple[torch.Tensor, ...], generator: torch.Generator | None
) -> tuple[torch.Tensor, ...]:
    """Return the tensors with their rows reordered by one shared random permutation.

    One ``torch.randperm`` on the data's device, then one gather per tensor.

    Example:
        >>> x = torch.arange(4)
        >>> a, b = shuffled((x, 10 * x), torch.Generator().manual_seed(0))
        >>> torch.equal(b, 10 * a), sorted(a.tolist())
        (True, [0, 1, 2, 3])
    """
    first = tensors[0]
    order = torch.randperm(first.shape[0], device=first.device, generator=generator)
    return tuple(tensor[order] for tensor in tensors)


def iter_batches(
    *tensors: torch.Tensor,
    batch_size: int = 1,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield aligned mini-batches of ``tensors``, one tuple per batch.

    The arguments are checked when ``iter_batches`` is called. When ``shuffle`` is true the
    rows are permuted once per call (one ``torch.randperm`` on the data's device, drawn from
    ``generator``), each tensor is gathered once, and every batch is a slice view of the
    gathered tensors. Without shuffling every batch is a view of the original tensors. The
    last batch is shorter when the number of rows is not a multiple of ``batch_size``.

    Args:
        *tensors: One or more tensors sharing their first (sample) dimension and device.
        batch_size: Rows per batch, a positive int.
        shuffle: Whether to visit the rows in a random order.
        generator: Random source for the shuffle, for reproducible orders.

    Returns:
        An iterator of tuples with one batch per input tensor.

    Raises:
        TypeError: A non-tensor, a non-int ``batch_size`` or a bad ``generator``.
        ValueError: No tensors, differing first dimensions or devices, or ``batch_size < 1``.

    Example:
        >>> X, y = torch.arange(10).reshape(5, 2), torch.arange(5)
        >>> [yb.tolist() for _, yb in iter_batches(X, y, batch_size=2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
        >>> g = torch.Generator().manual_seed(0)
        >>> order = [yb for _, yb in iter_batches(X, y, batch_size=2, generator=g)]
        >>> sorted(torch.cat(order).tolist())
        [0, 1, 2, 3, 4]
    """
    data = check_tensor_data(tensors, func="iter_batches", arg="tensors", last_label=False)
    check_positive_int(batch_size, func="iter_batches", arg="batch_size")
    check_bool(shuffle, func="iter_batches", arg="shuffle")
    check_one_device(data, func="iter_batches", arg="tensors")
    check_generator(generator, data[0].device, func="iter_batches")
    return _batches(data, batch_size, shuffle, generator)


def _batches(
    data: tuple[torch.Tensor, ...],
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    slices = batch_slices(data[0].shape[0], batch_size)
    if shuffle:
        data = shuffled(data, generator)
    for rows, _ in slices:
        yield tuple(tensor[rows] for tensor in data)


def steps_per_epoch(
    train_data: object,
    batch_size: int,
    *,
    accumulate: int = 1,
    rows: object = None,
) -> int | list[int]:
    """The optimizer steps one epoch takes, as the sources take them.

    An epoch cuts the rows into batches of ``batch_size``, the last one short (kept, never
    dropped), and takes one optimizer step per ``accumulate`` batches, the last group short
    too: ``ceil(ceil(n / batch_size) / accumulate)`` steps for ``n`` rows. That is the count a
    per-step schedule (``OneCycleLR(total_steps=epochs * steps)``) needs: 1400 rows in batches
    of 32 take 44 steps, not ``1400 // 32 == 43``. With ``rows`` (an ensemble's
    ``rows=``), one count per member, each from its own row count.

    Args:
        train_data: The training tensors, such as ``(X, y)`` (their first dimension counts the
            rows), or the number of rows itself.
        batch_size: Rows per mini-batch, as given to the source.
        accumulate: Batches per optimizer step, as given to the source.
        rows: An ensemble's ``rows=``: one index tensor per member.

    Returns:
        The steps of one epoch; a list of one per member with ``rows``.

    Raises:
        TypeError: ``train_data`` is neither tensors nor an int, a count is not an int, or
            ``rows`` not a list of index tensors.
        ValueError: A count below 1, or tensors that do not share their first dimension.

    Example:
        >>> steps_per_epoch(1400, 32)
        44
        >>> steps_per_epoch((torch.zeros(1400, 3), torch.zeros(1400)), 32, accumulate=4)
        11
        >>> steps_per_epoch(1400, 32, rows=[torch.arange(1000), torch.arange(64)])
        [32, 2]
    """
    func = "steps_per_epoch"
    check_positive_int(batch_size, func=func, arg="batch_size")
    check_positive_int(accumulate, func=func, arg="accumulate")
    if isinstance(train_data, int) and not isinstance(train_data, bool):
        check_positive_int(train_data, func=func, arg="train_data")
        n, device = train_data, None
    else:
        tensors = check_tensor_data(train_data, func=func, arg="train_data", last_label=False)
        n, device = int(tensors[0].shape[0]), tensors[0].device
    counts = [n]
    if rows is not None:
        first = rows[0] if isinstance(rows, list | tuple) and rows else None
        where = device or (first.device if isinstance(first, torch.Tensor) else torch.device("cpu"))
        member_rows = check_rows(rows, n, where, members=None, func=func, data="train_data")
        assert member_rows is not None
        counts = [int(r.numel()) for r in member_rows]
    batches = [_ceil_div(count, batch_size) for count in counts]  # the last one short
    steps = [_ceil_div(b, accumulate) for b in batches]  # the last group short too
    return steps if rows is not None else steps[0]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
