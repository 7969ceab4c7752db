"""The CUDA side of ``cuda_graphs=True``: the checks at the call, and warm-up and capture."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..._internal.checks import describe
from .step_state import optimizer_params

__all__ = ["CudaGraphs", "check_cuda_graphs"]


class CudaGraphs:
    """The CUDA calls of capture and replay, kept apart so that tests can stand in for them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def side_stream(self) -> Any:
        """A stream for warm-up and capture (one for both: libraries cache handles per stream)."""
        return torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]

    @contextmanager
    def warm_up(self, stream: Any) -> Iterator[None]:
        """Run the block on ``stream``, with host synchronisations raised as errors."""
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        previous = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(stream), warnings.catch_warnings():
                # capturable=True optimizers warn when stepped outside capture: expected here.
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                torch.cuda.set_sync_debug_mode("error")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
        finally:
            current.wait_stream(stream)

    def capture(self, fn: Callable[[], None], stream: Any) -> Any:
        """Capture ``fn``'s CUDA work into a graph (nothing runs yet); return the graph."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
        return graph


def check_cuda_graphs(
    cuda_graphs: object,
    tensors: Sequence[torch.Tensor],
    model: nn.Module,
    optimizer: object,
    *,
    func: str,
) -> bool:
    """Check ``cuda_graphs`` and, when it is true, that the training can run on CUDA graphs.

    Example:
        >>> check_cuda_graphs(False, [torch.zeros(2)], nn.Linear(1, 1), None, func="f")
        False
        >>> check_cuda_graphs(True, [torch.zeros(2)], nn.Linear(1, 1), None, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: cuda_graphs=True needs the data and the model on a CUDA device, ...
    """
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"{func}: 'cuda_graphs' must be True or False, got {describe(cuda_graphs)}")
    if not cuda_graphs:
        return False
    device = tensors[0].device
    if device.type != "cuda":
        raise ValueError(
            f"{func}: cuda_graphs=True needs the data and the model on a CUDA device, got "
            f"data on {device}; move both with .to('cuda'), or pass cuda_graphs=False"
        )
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.device != device:
            raise ValueError(
                f"{func}: cuda_graphs=True needs every parameter and buffer of the model on "
                f"the data's device {device}, but {name!r} is on {tensor.device}; move the "
                f"model with model.to({str(device)!r})"
            )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{func}: cuda_graphs=True needs a torch.optim.Optimizer (its state is recorded "
            f"and restored around the capture), got {describe(optimizer)}; pass "
            "cuda_graphs=False for other optimizers"
        )
    for p in optimizer_params(optimizer):
        if p.device != device:
            raise ValueError(
                f"{func}: cuda_graphs=True needs every parameter of the optimizer on the "
                f"data's device {device}, got one on {p.device}"
            )
    return True
