"""Which curves :func:`fitstream.plot_history` draws when given no keys, and in which panel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._internal.members import is_per_member
from .._internal.values import scalar_value
from ._tensorboard_layout import split_of

__all__ = ["found_metrics", "panel_title", "panels"]

_NOT_METRICS = ("step", "global_step", "lr")  # the x-axis, a counter, a hyperparameter


def found_metrics(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the keys worth plotting, in first-seen order: numbers or per-member lists.

    ``step``, ``global_step``, the learning rate ``lr`` (a setting; name it to draw it),
    timings (``*time_sec``) and bools are left out.

    Example:
        >>> found_metrics([{"step": 1, "train_loss": 0.5, "train_time_sec": 2.0, "model": None},
        ...                {"step": 2, "val_loss": [0.4, 0.6], "is_best": True, "lr": 0.1}])
        ['train_loss', 'val_loss']
    """
    found: dict[str, None] = {}
    for event in events:
        for key, value in event.items():
            if key in found or key in _NOT_METRICS or key.endswith("time_sec"):
                continue
            if isinstance(value, bool):
                continue
            if is_per_member(value) or scalar_value(value) is not None:
                found[key] = None
    return list(found)


def panels(keys: Sequence[str]) -> list[list[str]]:
    """Group keys into panels, one per metric once its split is removed (different scales).

    Example:
        >>> panels(["train_loss", "val_loss", "train_acc", "val_acc", "lr"])
        [['train_loss', 'val_loss'], ['train_acc', 'val_acc'], ['lr']]
    """
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(split_of(key)[1], []).append(key)
    return list(groups.values())


def panel_title(keys: Sequence[str]) -> str:
    """The title of a panel of ``keys``: their shared metric name.

    Example:
        >>> panel_title(["train_loss", "val_loss"]), panel_title(["lr"])
        ('loss', 'lr')
    """
    return split_of(keys[0])[1]
