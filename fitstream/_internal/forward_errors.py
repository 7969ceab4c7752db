"""Saying which data a model could not run on, when torch's error names only a kernel.

A feature-count or dtype mismatch between the data and the model surfaces as a bare
``addmm``/``mat1 and mat2`` error from deep inside the forward pass. The sources and the
evaluators catch the forward's ``RuntimeError`` and, when it is one of those, raise it again
naming the argument that holds the data, with its shapes and dtypes beside the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["explain_forward", "forward"]

_MISMATCH = (
    "mat1 and mat2",
    "shapes cannot be multiplied",
    "must have the same dtype",
    "expected scalar type",
    "size mismatch",
    "Expected all tensors to be on the same device",
    "expected input",
    "Expected input",
    "Input type",
    "Expected size for first two dimensions",
)


def _described(tensors: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors)


def _model_dtypes(model: Any) -> str:
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return "unknown"
    found = sorted({str(p.dtype).removeprefix("torch.") for p in parameters()})
    return ", ".join(found) or "none"


def explain_forward(
    exc: RuntimeError, model: Any, inputs: Sequence[torch.Tensor], *, func: str, arg: str
) -> None:
    """Raise ``exc`` again, naming ``arg``, when it says the inputs do not fit the model.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.zeros(2, 4)
        >>> try:
        ...     model(x)
        ... except RuntimeError as exc:
        ...     explain_forward(exc, model, [x], func="evaluate", arg="val_data")
        Traceback (most recent call last):
        ...
        RuntimeError: evaluate: the model cannot run on the inputs of 'val_data' ...
    """
    text = str(exc)
    if not any(mark in text for mark in _MISMATCH):
        return
    raise RuntimeError(
        f"{func}: the model cannot run on the inputs of '{arg}' (a batch of shapes and "
        f"dtypes {_described(inputs)}; the model's parameters are {_model_dtypes(model)}): "
        f"check the feature count and the dtype of '{arg}'. torch said: {text.splitlines()[0]}"
    ) from exc


def forward(model: Any, inputs: Sequence[torch.Tensor], *, func: str, arg: str) -> Any:
    """``model(*inputs)``, its error naming ``arg`` when the inputs do not fit the model.

    Example:
        >>> forward(torch.nn.Linear(3, 1), [torch.zeros(2, 4)], func="evaluate", arg="val_data")
        Traceback (most recent call last):
        ...
        RuntimeError: evaluate: the model cannot run on the inputs of 'val_data' ...
    """
    try:
        return model(*inputs)
    except RuntimeError as exc:
        explain_forward(exc, model, inputs, func=func, arg=arg)
        raise
