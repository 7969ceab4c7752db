"""Turn a record's values into JSON data, or say which key cannot be written and why."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch

from .._internal.values import scalar_value

__all__ = [
    "NON_FINITE",
    "decode_non_finite",
    "file_watch",
    "json_key",
    "json_line",
    "json_ready",
]

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How the JSON Lines sink writes the floats JSON has no numbers for, and their values."""


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def decode_non_finite(value: Any) -> Any:
    """Turn the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` back into floats, in lists too.

    Example:
        >>> decode_non_finite(["NaN", 1.0, "-Infinity", "text"])
        [nan, 1.0, -inf, 'text']
    """
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [decode_non_finite(item) for item in value]
    return value


_WRITABLE = "numbers, strings, bools, None, tensors, NumPy values, and lists or dicts of them"


def json_key(inner: object, *, key: str, caller: str, where: str = "its dict has") -> str:
    """The JSON object key of a dict key: a string as it is, an int as its digits.

    The rule is the same for an event's own keys and for the keys of a dict inside a value.

    Example:
        >>> json_key(3, key="per_class", caller="demo")
        '3'
        >>> json_key((1, 2), key="per_class", caller="demo")
        Traceback (most recent call last):
        ...
        TypeError: demo: cannot write key 'per_class': its dict has a key of type tuple ...
    """
    if isinstance(inner, str):
        return inner
    if isinstance(inner, int) and not isinstance(inner, bool):
        return str(inner)
    raise TypeError(
        f"{caller}: cannot write key {key!r}: {where} a key of type {type(inner).__name__} "
        f"({inner!r:.40}); JSON object keys are strings (ints are written as their digits)"
    )


def json_ready(value: Any, *, key: str, caller: str, _within: frozenset[int] = frozenset()) -> Any:
    """Return ``value`` as JSON data: numbers, strings, bools, ``None``, lists and dicts.

    0-d tensors and NumPy scalars become Python numbers; larger tensors and NumPy arrays become
    nested lists; other real numbers (e.g. ``fractions.Fraction``) become floats; tuples become
    lists; a dict's int keys become strings (:func:`json_key`). Anything else, a tensor without
    values (on the meta device) and a list or dict that holds itself raise an error naming
    ``key``.

    Example:
        >>> json_ready({"acc": torch.tensor([0.5, 1.0])}, key="per_class", caller="demo")
        {'acc': [0.5, 1.0]}
        >>> json_ready(object(), key="model", caller="demo")
        Traceback (most recent call last):
        ...
        TypeError: demo: cannot write key 'model': a value of type object is not JSON data ...
    """
    if isinstance(value, float):
        return _float(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":
            raise TypeError(
                f"{caller}: cannot write key {key!r}: a tensor on the meta device has a shape "
                f"({tuple(value.shape)}) but no values"
            )
        plain = value.item() if value.ndim == 0 else value.detach().cpu().tolist()
        return json_ready(plain, key=key, caller=caller)
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        number = scalar_value(value)
        plain = number if number is not None else value.tolist()
        return json_ready(plain, key=key, caller=caller)
    if isinstance(value, numbers.Real):
        return _float(float(value))
    if isinstance(value, list | tuple | Mapping):
        if id(value) in _within:
            raise ValueError(
                f"{caller}: cannot write key {key!r}: its {type(value).__name__} holds itself, "
                f"so it has no end as JSON"
            )
        within = _within | {id(value)}
        if not isinstance(value, Mapping):
            return [json_ready(item, key=key, caller=caller, _within=within) for item in value]
        result: dict[str, Any] = {}
        for inner, item in value.items():
            name = json_key(inner, key=key, caller=caller)
            result[name] = json_ready(item, key=f"{key}.{name}", caller=caller, _within=within)
        return result
    raise TypeError(
        f"{caller}: cannot write key {key!r}: a value of type {type(value).__name__} is not "
        f"JSON data ({_WRITABLE}); got {value!r:.80}. Leave it out with exclude=[{key!r}] or "
        f"turn it into a number or string in a stage (augment) before the sink."
    )


def json_line(record: Mapping[str, Any], *, caller: str) -> str:
    r"""Return ``record`` as one line of JSON, newline included.

    The line is strict JSON: non-finite floats are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"`` (see :func:`decode_non_finite`).

    Example:
        >>> json_line({"step": 1, "loss": float("nan")}, caller="demo")
        '{"step": 1, "loss": "NaN"}\n'
    """
    data = {
        json_key(key, key=str(key), caller=caller, where="the event has"): json_ready(
            value, key=str(key), caller=caller
        )
        for key, value in record.items()
    }
    return json.dumps(data, allow_nan=False) + "\n"


def file_watch(handle: IO[str]) -> Callable[[], None]:
    """Return a check that raises when the file behind ``handle`` has been deleted or replaced.

    Handles that are not files on disk (a ``StringIO``, a pipe, a terminal) are not watched.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "run.jsonl")
        ...     with open(path, "w") as handle:
        ...         still_there = file_watch(handle)
        ...         still_there()
        ...         os.remove(path)
        ...         still_there()
        Traceback (most recent call last):
        ...
        FileNotFoundError: collect_jsonl: the file '...run.jsonl' was deleted or replaced ...
    """
    name = getattr(handle, "name", None)
    try:
        opened = os.fstat(handle.fileno())
    except (AttributeError, OSError, ValueError):
        return lambda: None
    if not isinstance(name, str) or not os.path.isfile(name):
        return lambda: None

    def still_there() -> None:
        try:
            now = os.stat(name)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            raise FileNotFoundError(
                f"collect_jsonl: the file {name!r} was deleted or replaced while the run was "
                f"writing to it; the lines written so far are gone with it and later ones "
                f"would be lost too, so the stream stops here"
            )

    return still_there
