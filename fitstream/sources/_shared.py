"""Pieces the in-memory sources share: argument checks, loss sums and bad-loss messages."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._internal.callables import check_arity, check_not_a_class
from .._internal.checks import (
    check_bool,
    check_callable,
    check_non_negative_int,
    check_one_device,
    check_positive_int,
    check_same_device,
    check_tensor_data,
    describe,
)
from .._internal.train_checks import check_training_data
from .graphed.cuda import check_cuda_graphs

__all__ = [
    "RESERVED_KEYS",
    "Released",
    "check_extra",
    "check_fit",
    "check_optimizer",
    "check_run",
    "explain_bad_loss",
    "stack_losses",
    "weighted_loss_sum",
]

RESERVED_KEYS = frozenset(
    {"step", "model", "optimizer", "train_loss", "train_time_sec", "lr", "active"}
)


class Released(Iterator[Any]):
    """An iterator over a source's generator that lets go of it once closed.

    Whether a closed generator still holds its frame's locals (the model, the data) is up to
    the interpreter; a stream closed by the consumer must release them at once, so the
    generator itself is dropped on :meth:`close`.

    Example:
        >>> stream = Released(n for n in range(3))
        >>> next(stream), stream.close(), list(stream)
        (0, None, [])
    """

    __slots__ = ("_events",)

    def __init__(self, events: Generator[Any, None, None]) -> None:
        self._events: Generator[Any, None, None] | None = events

    def __next__(self) -> Any:
        if self._events is None:
            raise StopIteration
        return next(self._events)

    def close(self) -> None:
        """Stop the stream (its generator runs its clean-up) and release what it held."""
        events, self._events = self._events, None
        if events is not None:
            events.close()


def check_run(
    train_data: object,
    loss_fn: object,
    *,
    batch_size: object,
    shuffle: bool,
    last_label: bool,
    extra: object,
    step_offset: object,
    func: str,
) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Check the arguments every in-memory source takes alike; return the tensors and extras.

    Example:
        >>> data = (torch.zeros(4, 2), torch.zeros(4))
        >>> tensors, extra = check_run(data, nn.MSELoss(), batch_size=2, shuffle=True,
        ...     last_label=True, extra=None, step_offset=0, func="f")
        >>> len(tensors), extra
        (2, {})
    """
    check_bool(shuffle, func=func, arg="shuffle")
    check_bool(last_label, func=func, arg="last_label")
    tensors = check_tensor_data(train_data, func=func, arg="train_data", last_label=last_label)
    check_not_a_class(loss_fn, func=func, arg="loss_fn", what="a loss function")
    check_callable(loss_fn, func=func, arg="loss_fn")
    assert callable(loss_fn)
    if last_label:
        check_arity(loss_fn, 2, func=func, arg="loss_fn", of="the prediction and the labels")
    else:
        check_arity(loss_fn, 1, func=func, arg="loss_fn", of="the prediction")
    check_positive_int(batch_size, func=func, arg="batch_size")
    check_one_device(tensors, func=func, arg="train_data")
    constants = check_extra(extra, func=func)
    check_non_negative_int(step_offset, func=func, arg="step_offset")
    return tensors, constants


def check_fit(
    tensors: Sequence[torch.Tensor],
    model: nn.Module,
    optimizer: object,
    cuda_graphs: object,
    *,
    func: str,
) -> bool:
    """Check that the data suits ``model`` (device, dtype, no grad); return ``cuda_graphs``.

    ``cuda_graphs`` is checked before the device match, so that a model or data on the CPU is
    refused naming it.

    Example:
        >>> check_fit([torch.zeros(4, 2)], nn.Linear(2, 1), None, False, func="f")
        False
    """
    graphed = check_cuda_graphs(cuda_graphs, tensors, model, optimizer, func=func)
    check_same_device(tensors, model, func=func, arg="train_data")
    check_training_data(tensors, model, func=func, arg="train_data")
    return graphed


def check_optimizer(optimizer: object, *, func: str, arg: str) -> None:
    """Refuse an object that is neither a torch optimizer nor has ``step()`` and ``zero_grad()``.

    Example:
        >>> check_optimizer(object(), func="f", arg="optimizer")
        Traceback (most recent call last):
        ...
        TypeError: f: 'optimizer' must be a torch optimizer (an object with step() and ...
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        return
    missing = [
        name for name in ("step", "zero_grad") if not callable(getattr(optimizer, name, None))
    ]
    if missing:
        raise TypeError(
            f"{func}: '{arg}' must be a torch optimizer (an object with step() and "
            f"zero_grad()), got {describe(optimizer)} "
            f"(missing {', '.join(missing)})"
        )


def check_extra(extra: object, *, func: str) -> dict[str, Any]:
    """Check ``extra`` (constant event entries) and return it as a new dict.

    Example:
        >>> check_extra({"run": "a"}, func="f")
        {'run': 'a'}
        >>> check_extra({"step": 3}, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: 'extra' must not set the event's own keys [...], got ['step']
    """
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"{func}: 'extra' must be a mapping of constant event entries such as "
            f"{{'run': 'baseline'}}, got {describe(extra)}"
        )
    bad_keys = [key for key in extra if not isinstance(key, str)]
    if bad_keys:
        raise TypeError(f"{func}: the keys of 'extra' must be str, got {bad_keys!r:.60}")
    clashes = sorted(RESERVED_KEYS.intersection(extra))
    if clashes:
        raise ValueError(
            f"{func}: 'extra' must not set the event's own keys {sorted(RESERVED_KEYS)}, "
            f"got {clashes}"
        )
    return dict(extra)


def stack_losses(losses: list[torch.Tensor]) -> torch.Tensor:
    """Stack detached batch losses, in at least single precision for the epoch's sum.

    Example:
        >>> stack_losses([torch.tensor(1.0, dtype=torch.half)]).dtype
        torch.float32
    """
    stacked = torch.stack(losses)
    if stacked.is_floating_point() and stacked.element_size() < 4:
        stacked = stacked.float()  # half-precision sums over many batches would lose digits
    return stacked


def weighted_loss_sum(losses: list[torch.Tensor], slices: list[tuple[slice, int]]) -> torch.Tensor:
    """The epoch's batch losses summed weighted by batch size (one model's, or ``(K,)``).

    The full batches share one weight, so their losses are summed as they are and scaled once;
    only a short last batch needs a weight of its own.

    Example:
        >>> slices = [(slice(0, 4), 4), (slice(4, 8), 4), (slice(8, 10), 2)]
        >>> weighted_loss_sum([torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)], slices)
        tensor(18.)
    """
    full = slices[0][1]
    short = slices[-1][1] != full
    body = losses[:-1] if short else losses
    total = stack_losses(body).sum(0) * full if body else None
    if short:
        last = losses[-1] * slices[-1][1]
        total = last if total is None else total + last
    assert total is not None  # at least one batch: the data is never empty
    return total


def explain_bad_loss(loss: object, exc: BaseException, *, func: str, per: str = "batch") -> None:
    """Replace PyTorch's error about an unusable loss value with one that says what came.

    ``loss`` is the last value ``loss_fn`` returned; when it is a usable loss the error came
    from elsewhere (the model, the loss function itself) and is left to propagate unchanged.
    ``per`` names what one loss value is for ("batch", or "member and batch").
    """
    if loss is None:
        return
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"{func}: 'loss_fn' must return a scalar tensor, got {describe(loss)}"
        ) from exc
    if loss.numel() != 1:
        raise ValueError(
            f"{func}: 'loss_fn' must return a scalar tensor (one value per {per}, e.g. a "
            f"mean), got a tensor of shape {tuple(loss.shape)}"
        ) from exc
    if not loss.requires_grad:
        raise ValueError(
            f"{func}: the loss returned by 'loss_fn' does not depend on any parameter that "
            f"requires grad (was it computed under torch.no_grad(), or detached?)"
        ) from exc
