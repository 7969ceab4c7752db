"""What a captured training step depends on, and how to put it back as it was.

A CUDA graph replays the kernels it recorded, on the memory it recorded them with, with the
Python numbers it saw at capture time. This module holds the plain-PyTorch half of
``cuda_graphs=True`` (it runs, and is tested, without a GPU):

- :func:`world_key` sums up everything the captured step depends on but cannot see change
  (which tensors it reads, the optimizer's hyperparameters, train/eval and ``requires_grad``
  flags); a different key at the start of an epoch means the graph must be captured again.
- :class:`~fitstream.sources.graphed.snapshot.Snapshot` (its own module) puts back what warm-up
  steps and a failed capture changed.
- :func:`make_capturable` and :func:`check_state` prepare and vet an optimizer for capture.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

import torch
from torch import nn

__all__ = [
    "CaptureError",
    "check_state",
    "explain_capture_failure",
    "make_capturable",
    "model_tensors",
    "needs_first_step",
    "optimizer_params",
    "tensor_key",
    "world_key",
]


class CaptureError(RuntimeError):
    """The training step cannot be captured as a CUDA graph; the message says what to change."""


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in the order of its param groups.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> [tuple(p.shape) for p in optimizer_params(opt)]
        [(1, 2), (1,)]
    """
    return [p for group in optimizer.param_groups for p in group["params"]]


def model_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``model`` with its name, shared ones under each name."""
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def tensor_key(tensor: torch.Tensor) -> tuple[Hashable, ...]:
    """A tensor as the graph sees it: which object, which memory, which layout."""
    return (
        id(tensor),
        tensor.data_ptr(),
        str(tensor.device),
        tensor.dtype,
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def _value_key(value: object, *, hyper: bool = False) -> Hashable:
    if isinstance(value, torch.Tensor):
        key = ("tensor", *tensor_key(value))
        if hyper and value.device.type == "cpu" and value.numel() <= 16:
            # A hyperparameter held in a CPU tensor is read on the host at capture time and
            # frozen into the graph: its value counts too (reading it needs no GPU sync).
            key += (tuple(value.detach().reshape(-1).tolist()),)
        return key
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_value_key(item, hyper=hyper) for item in value))
    if isinstance(value, dict):
        return (
            "dict",
            *sorted((str(k), _value_key(v, hyper=hyper)) for k, v in value.items()),
        )
    if value is None or isinstance(value, bool | int | float | str | complex):
        return value
    return ("object", type(value).__name__, id(value))


def world_key(model: nn.Module, optimizer: torch.optim.Optimizer) -> Hashable:
    """Everything a captured step depends on that a replay cannot notice changing.

    Two keys are equal when the same parameter, buffer and optimizer-state tensor objects sit
    at the same memory, every param group holds the same parameters and hyperparameters, and
    every module's ``training`` flag and every parameter's ``requires_grad`` are as they were.
    Values changed *in place* (``load_state_dict`` of the model, a state tensor filled in
    place) keep the key: the graph reads the new values by itself.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> key = world_key(model, opt)
        >>> model.load_state_dict(nn.Linear(2, 1).state_dict())  # copies in place
        <All keys matched successfully>
        >>> world_key(model, opt) == key
        True
        >>> opt.param_groups[0]["lr"] = 0.01
        >>> world_key(model, opt) == key
        False
    """
    tensors = tuple((name, tensor_key(t), t.requires_grad) for name, t in model_tensors(model))
    flags = tuple(module.training for module in model.modules())
    groups = tuple(
        (
            tuple(id(p) for p in group["params"]),
            _value_key({k: v for k, v in group.items() if k != "params"}, hyper=True),
        )
        for group in optimizer.param_groups
    )
    state = tuple(
        (id(p), _value_key(dict(optimizer.state[p])))
        for p in optimizer_params(optimizer)
        if p in optimizer.state
    )
    return (tensors, flags, groups, state)


def needs_first_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a parameter that trains still has no optimizer state.

    Optimizers create their state at the first step, and that first step often differs from
    the later ones (SGD copies the gradient into a new momentum buffer). A graph always
    replays the later kind, so such a first step is run eagerly, for real, before capture.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(model.parameters())
        >>> needs_first_step(opt)
        True
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> opt.step()
        >>> needs_first_step(opt)
        False
    """
    return any(p.requires_grad and not optimizer.state.get(p) for p in optimizer_params(optimizer))


def make_capturable(optimizer: torch.optim.Optimizer) -> list[int]:
    """Switch every param group that has a ``capturable`` flag to ``capturable=True``.

    ``capturable=True`` makes a torch optimizer keep its step counts on the parameters'
    device and compute its bias corrections there, so that a graph replays them; the update
    is the same (the bias corrections are computed in the state's precision on the device
    instead of in double precision on the host). State tensors already created on another
    device are moved next to their parameter, keeping their values and dtypes.

    Returns:
        The indices of the groups that were switched.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(model.parameters())
        >>> make_capturable(opt), opt.param_groups[0]["capturable"]
        ([0], True)
        >>> make_capturable(opt)
        []
    """
    switched = []
    for index, group in enumerate(optimizer.param_groups):
        if "capturable" not in group or group["capturable"]:
            continue
        group["capturable"] = True
        switched.append(index)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.device != p.device:
                    state[name] = value.to(device=p.device)
    return switched


def check_state(optimizer: torch.optim.Optimizer, *, func: str) -> None:
    """Refuse optimizer state that a graph would freeze: Python numbers, off-device tensors.

    Raises:
        CaptureError: A ``RuntimeError`` naming the state entry, what it is, and what to
            change.

    Example:
        >>> p = nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([p], lr=0.1)
        >>> opt.state[p]["step"] = 3
        >>> check_state(opt, func="epoch_stream")
        Traceback (most recent call last):
        ...
        fitstream.sources.graphed.step_state.CaptureError: epoch_stream: cuda_graphs=True cannot ...
    """
    for p in optimizer_params(optimizer):
        for name, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                if value.device == p.device:
                    continue
                what = f"a tensor on {value.device} while its parameter is on {p.device}"
            elif isinstance(value, int | float) and not isinstance(value, bool):
                what = f"a Python {type(value).__name__} ({value!r})"
            else:
                continue
            raise CaptureError(
                f"{func}: cuda_graphs=True cannot capture the optimizer step: "
                f"{type(optimizer).__name__} keeps its state {name!r} as {what}, which a "
                "CUDA graph would replay frozen at its captured value. Use an optimizer that "
                "keeps its state in tensors on the parameters' device (torch.optim optimizers "
                "with capturable=True do), or pass cuda_graphs=False"
            )


def explain_capture_failure(exc: BaseException, *, func: str) -> CaptureError | None:
    """Turn an error met while warming up or capturing the step into one that says what to do.

    Returns ``None`` for errors that are not about capture (they propagate unchanged), and
    for a :class:`CaptureError`, which says what to change already.

    Example:
        >>> error = RuntimeError("called a synchronizing CUDA operation")
        >>> print(explain_capture_failure(error, func="epoch_stream"))  # doctest: +ELLIPSIS
        epoch_stream: cuda_graphs=True cannot capture the training step: it makes the host wait...
        >>> explain_capture_failure(ValueError("shapes differ"), func="epoch_stream") is None
        True
    """
    if isinstance(exc, CaptureError):
        return None
    text = str(exc)
    fix = (
        "Move that code out of the model, loss_fn and optimizer (compute such values on the "
        "device, without reading them back; optimizers without a capturable flag, such as "
        "Adagrad, read their step count back), or pass cuda_graphs=False"
    )
    if "synchronizing CUDA operation" in text:
        cause = (
            "it makes the host wait for the GPU (a synchronisation such as .item(), .cpu(), "
            ".tolist(), print(tensor), a Python `if` on a tensor, or an op whose output size "
            "depends on the data: boolean-mask indexing, nonzero(), unique())"
        )
    elif "captur" in text.lower():
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        cause = (
            "an operation that CUDA graphs do not allow ran inside the step (a host "
            "synchronisation, a copy between CPU and GPU, or a stream or event query); "
            f"PyTorch said: {first[:200]}"
        )
    else:
        return None
    return CaptureError(
        f"{func}: cuda_graphs=True cannot capture the training step: {cause}. {fix}. "
        "The model and optimizer are as they were before this epoch."
    )
