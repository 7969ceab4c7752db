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

__all__ = ["iter_batches"]


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
