"""Turn a record's values into JSON data, or say which key cannot be written and why."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from .._internal.values import scalar_value

__all__ = ["json_line", "json_ready"]

_WRITABLE = "numbers, strings, bools, None, tensors, NumPy values, and lists or dicts of them"


def json_ready(value: Any, *, key: str, caller: str) -> Any:
    """Return ``value`` as JSON data: numbers, strings, bools, ``None``, lists and dicts.

    0-d tensors and NumPy scalars become Python numbers; larger tensors and NumPy arrays become
    nested lists; other real numbers (e.g. ``fractions.Fraction``) become floats; tuples become
    lists. Anything else raises a TypeError naming ``key`` and the value's type.

    Example:
        >>> json_ready({"acc": torch.tensor([0.5, 1.0])}, key="per_class", caller="demo")
        {'acc': [0.5, 1.0]}
        >>> json_ready(object(), key="model", caller="demo")
        Traceback (most recent call last):
        ...
        TypeError: demo: cannot write key 'model': a value of type object is not JSON data ...
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.ndim == 0 else value.detach().cpu().tolist()
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        number = scalar_value(value)
        return number if number is not None else json_ready(value.tolist(), key=key, caller=caller)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple):
        return [json_ready(item, key=key, caller=caller) for item in value]
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for inner, item in value.items():
            if not isinstance(inner, str):
                raise TypeError(
                    f"{caller}: cannot write key {key!r}: its dict has a key of type "
                    f"{type(inner).__name__} ({inner!r:.40}); JSON object keys are strings"
                )
            result[inner] = json_ready(item, key=f"{key}.{inner}", caller=caller)
        return result
    raise TypeError(
        f"{caller}: cannot write key {key!r}: a value of type {type(value).__name__} is not "
        f"JSON data ({_WRITABLE}); got {value!r:.80}. Leave it out with exclude=[{key!r}] or "
        f"turn it into a number or string in a stage (augment) before the sink."
    )


def json_line(record: Mapping[str, Any], *, caller: str) -> str:
    r"""Return ``record`` as one line of JSON, newline included.

    Non-finite floats are written as ``NaN``, ``Infinity`` and ``-Infinity``, as Python's
    :mod:`json` does by default; :func:`json.loads` and :func:`pandas.read_json` read them back.

    Example:
        >>> json_line({"step": 1, "loss": float("nan")}, caller="demo")
        '{"step": 1, "loss": NaN}\n'
    """
    data = {key: json_ready(value, key=key, caller=caller) for key, value in record.items()}
    return json.dumps(data) + "\n"
