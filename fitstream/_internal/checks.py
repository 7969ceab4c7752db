"""Argument checks shared by the sources and the augmenters, with errors that say what came."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "OWN_KEYS",
    "check_bool",
    "check_callable",
    "check_generator",
    "check_name",
    "check_non_negative_int",
    "check_not_own_key",
    "check_one_device",
    "check_positive_int",
    "check_same_device",
    "check_strings",
    "check_tensor_data",
    "describe",
    "model_device",
]


OWN_KEYS = frozenset({"step", "model", "train_loss", "train_time_sec", "trainer", "global_step"})
"""The keys a source puts in every event; augmenters and stages must not overwrite them."""

_DEFAULT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def describe(value: object) -> str:
    """Say what a refused value is, for the end of an error message: its type and its start.

    An object without a repr of its own is named by its type (its address says nothing); a
    long repr is cut at 60 characters and marked with ``...``.

    Example:
        >>> describe("val_loss"), describe(torch.zeros(2))
        ("str: 'val_loss'", 'Tensor(shape=(2,), dtype=torch.float32, device=cpu)')
        >>> describe(nn.ReLU().register_forward_hook(print))
        'RemovableHandle object'
        >>> describe("x" * 70)
        "str: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."
    """
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    text = repr(value)
    if _DEFAULT_REPR.fullmatch(text):
        return f"{type(value).__qualname__} object"
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__}: {text}"


def check_bool(value: object, *, func: str, arg: str) -> None:
    """Refuse a flag that is not ``True`` or ``False`` (``"no"`` would otherwise mean true).

    Example:
        >>> check_bool("no", func="epoch_stream", arg="shuffle")
        Traceback (most recent call last):
        ...
        TypeError: epoch_stream: 'shuffle' must be True or False, got str: 'no'
    """
    if not isinstance(value, bool):
        raise TypeError(f"{func}: '{arg}' must be True or False, got {describe(value)}")


def check_not_own_key(key: str, *, func: str, arg: str) -> None:
    """Refuse an output key that would overwrite one of the event's own keys (:data:`OWN_KEYS`).

    Example:
        >>> check_not_own_key("train_loss", func="validation_loss", arg="key")
        Traceback (most recent call last):
        ...
        ValueError: validation_loss: 'key' must not be one of the event's own keys ...
    """
    if key in OWN_KEYS:
        raise ValueError(
            f"{func}: '{arg}' must not be one of the event's own keys {sorted(OWN_KEYS)}, got "
            f"{key!r}; choose another name, e.g. 'val_{key}'"
        )


def check_tensor_data(
    data: object, *, func: str, arg: str, last_label: bool
) -> tuple[torch.Tensor, ...]:
    """Check that ``data`` is a non-empty sequence of tensors with one shared first dimension.

    Args:
        data: What the user passed, e.g. ``(X, y)``.
        func: The public function's name, for the message.
        arg: The argument's name, for the message.
        last_label: Whether the last tensor is the label (then two tensors are needed).

    Returns:
        The tensors as a tuple.

    Raises:
        TypeError: ``data`` is not a sequence of tensors.
        ValueError: No tensors, no samples, first dimensions that differ, or a single tensor
            with ``last_label=True``.

    Example:
        >>> X, y = torch.zeros(4, 2), torch.zeros(4)
        >>> len(check_tensor_data((X, y), func="f", arg="data", last_label=True))
        2
        >>> check_tensor_data((X, y[:3]), func="f", arg="data", last_label=True)
        Traceback (most recent call last):
        ...
        ValueError: f: all tensors in 'data' must have the same first dimension ...
    """
    if isinstance(data, torch.Tensor):
        raise TypeError(
            f"{func}: '{arg}' must be a tuple or list of tensors such as (X, y), got a single "
            f"{describe(data)}; wrap it: ({arg},) with last_label=False, or pass (X, y)"
        )
    if not isinstance(data, Sequence) or isinstance(data, str | bytes):
        hint = ""
        if hasattr(data, "dataset") and hasattr(data, "__iter__"):  # a DataLoader
            hint = (
                "; FitStream trains on tensors held in memory: take them from the dataset "
                f"({arg} = loader.dataset.tensors for a TensorDataset) or gather the batches "
                f"once: {arg} = tuple(map(torch.cat, zip(*loader)))"
            )
        raise TypeError(
            f"{func}: '{arg}' must be a tuple or list of tensors such as (X, y), "
            f"got {describe(data)}{hint}"
        )
    tensors = tuple(data)
    if not tensors:
        raise ValueError(f"{func}: '{arg}' must hold at least one tensor, got an empty sequence")
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"{func}: '{arg}[{position}]' must be a torch.Tensor, got {describe(tensor)}"
            )
        if tensor.ndim == 0:
            raise ValueError(
                f"{func}: '{arg}[{position}]' must have a sample dimension, got a 0-d tensor"
            )
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{func}: all tensors in '{arg}' must have the same first dimension (one row per "
            f"sample), got first dimensions {sizes}"
        )
    if sizes[0] == 0:
        raise ValueError(f"{func}: '{arg}' holds no samples (first dimension 0)")
    if last_label and len(tensors) < 2:
        raise ValueError(
            f"{func}: last_label=True needs at least two tensors in '{arg}' (inputs..., labels), "
            f"got {len(tensors)}; pass last_label=False to feed every tensor to the model"
        )
    return tensors


def check_positive_int(value: Any, *, func: str, arg: str, allow_none: bool = False) -> None:
    """Refuse anything but an ``int`` >= 1 (``bool`` is refused; ``None`` only if allowed).

    Example:
        >>> check_positive_int(0, func="f", arg="batch_size")
        Traceback (most recent call last):
        ...
        ValueError: f: 'batch_size' must be a positive int, got 0
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}: '{arg}' must be a positive int, got {describe(value)}")
    if value < 1:
        raise ValueError(f"{func}: '{arg}' must be a positive int, got {value!r}")


def check_non_negative_int(value: Any, *, func: str, arg: str) -> None:
    """Refuse anything but an ``int`` >= 0 (``bool`` is refused).

    Example:
        >>> check_non_negative_int(-1, func="take", arg="n")
        Traceback (most recent call last):
        ...
        ValueError: take: 'n' must be a non-negative int, got -1
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}: '{arg}' must be a non-negative int, got {describe(value)}")
    if value < 0:
        raise ValueError(f"{func}: '{arg}' must be a non-negative int, got {value!r}")


def check_name(value: Any, *, func: str, what: str) -> None:
    """Refuse anything but a non-empty string, e.g. an event key (``what`` names the argument).

    Example:
        >>> check_name(3, func="ema", what="'key'")
        Traceback (most recent call last):
        ...
        TypeError: ema: 'key' must be a non-empty string such as 'val_loss', got int: 3
    """
    if not isinstance(value, str) or not value:
        error = ValueError if isinstance(value, str) else TypeError
        raise error(
            f"{func}: {what} must be a non-empty string such as 'val_loss', got {describe(value)}"
        )


def check_strings(values: Sequence[object], *, func: str, arg: str) -> None:
    """Refuse a sequence of event keys holding something other than strings.

    Example:
        >>> check_strings(["train_loss", 3], func="progress", arg="keys")
        Traceback (most recent call last):
        ...
        TypeError: progress: keys must be strings (event keys such as 'train_loss'), got int ...
    """
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(
                f"{func}: {arg} must be strings (event keys such as 'train_loss'), "
                f"got {type(value).__name__} at position {position}: {value!r:.60}"
            )


def check_callable(value: Any, *, func: str, arg: str) -> None:
    """Refuse a value that cannot be called.

    Example:
        >>> check_callable(3, func="tap", arg="fn")
        Traceback (most recent call last):
        ...
        TypeError: tap: 'fn' must be callable, got int: 3
    """
    if not callable(value):
        raise TypeError(f"{func}: '{arg}' must be callable, got {describe(value)}")


def check_same_device(
    tensors: Sequence[torch.Tensor], model: nn.Module, *, func: str, arg: str
) -> None:
    """Refuse data that lives on another device than the model's parameters.

    A model without parameters or buffers is accepted with any data.

    Example:
        >>> model = nn.Linear(2, 1).to("meta")
        >>> check_same_device([torch.zeros(3, 2)], model, func="f", arg="data")
        Traceback (most recent call last):
        ...
        ValueError: f: 'data[0]' is on device cpu but the model is on meta; ...
    """
    device = model_device(model)
    if device is None:
        return
    for position, tensor in enumerate(tensors):
        if tensor.device != device:
            raise ValueError(
                f"{func}: '{arg}[{position}]' is on device {tensor.device} but the model is on "
                f"{device}; move them together first, e.g. tensor.to({str(device)!r})"
            )


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter (else first buffer); None if it has neither.

    Example:
        >>> model_device(nn.Linear(2, 1)), model_device(nn.ReLU())
        (device(type='cpu'), None)
    """
    first: torch.Tensor | None = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return None if first is None else first.device


def check_one_device(tensors: Sequence[torch.Tensor], *, func: str, arg: str) -> None:
    """Refuse tensors that do not all live on the first tensor's device.

    Example:
        >>> check_one_device([torch.zeros(2), torch.zeros(2)], func="f", arg="data")
        >>> check_one_device([torch.zeros(2), torch.zeros(2, device="meta")], func="f", arg="data")
        Traceback (most recent call last):
        ...
        ValueError: f: 'data[1]' is on device meta but 'data[0]' is on cpu; ...
    """
    device = tensors[0].device
    for position, tensor in enumerate(tensors[1:], start=1):
        if tensor.device != device:
            raise ValueError(
                f"{func}: '{arg}[{position}]' is on device {tensor.device} but '{arg}[0]' is on "
                f"{device}; move every tensor to one device first"
            )


def check_generator(generator: object, device: torch.device, *, func: str) -> None:
    """Refuse a ``generator`` that is not a :class:`torch.Generator` on the data's device.

    Example:
        >>> check_generator(None, torch.device("cpu"), func="f")
        >>> check_generator(42, torch.device("cpu"), func="f")
        Traceback (most recent call last):
        ...
        TypeError: f: 'generator' must be a torch.Generator or None, got int: 42
    """
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{func}: 'generator' must be a torch.Generator or None, got {describe(generator)}"
        )
    if generator.device.type != device.type:
        raise ValueError(
            f"{func}: 'generator' is on device {generator.device} but the data is on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
