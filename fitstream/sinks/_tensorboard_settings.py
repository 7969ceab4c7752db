"""TensorBoard for a grid: one run per setting, its mean over the folds and a band, not K runs.

A 5-fold x 4-lr ensemble has 20 members; one run per member (and per split) gave TensorBoard
40 curves in 40 colours. When every member carries a ``fold`` (cross-validation, or a
``search(folds=...)``), the members that share everything else are one *setting*, and
:func:`fitstream.log_tensorboard` writes one run per setting instead (``lr=0.01/train``,
``lr=0.01/validation``): under each metric's tag the mean over its folds, and under
``folds/<metric>_low`` and ``folds/<metric>_high`` the mean minus and plus one standard
deviation (``ddof=0``, as :func:`fitstream.plot_history` draws it), which the Custom Scalars
tab draws as a band around the mean. ``per_member=True`` keeps one run per member.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._internal.members import differing_keys, member_labels

__all__ = ["BAND_GROUP", "Settings", "band_tags", "settings_of"]

BAND_GROUP = "folds/"
"""The Time Series group of the bands' edges: after ``epoch``, so Time Series opens on the means."""


def band_tags(tag: str) -> tuple[str, str]:
    """The tags of the band around ``tag``'s mean: its low and high edges.

    Example:
        >>> band_tags("epoch/loss")
        ('folds/loss_low', 'folds/loss_high')
    """
    metric = tag.split("/", 1)[-1]
    return f"{BAND_GROUP}{metric}_low", f"{BAND_GROUP}{metric}_high"


@dataclass(frozen=True)
class Settings:
    """The members grouped by setting: each setting's members, folder and hyperparameters."""

    members: list[list[int]]
    folders: list[str]
    hparams: list[dict[str, Any]]

    def summarize(
        self, values: Sequence[float], active: Sequence[bool]
    ) -> list[tuple[float, float, float] | None]:
        """Per setting, ``(mean, low, high)`` of its members' values; None once none trains.

        Example:
            >>> s = Settings([[0, 1], [2, 3]], ["a", "b"], [{}, {}])
            >>> s.summarize([1.0, 3.0, 5.0, 5.0], [True, True, False, False])
            [(2.0, 1.0, 3.0), None]
        """
        out: list[tuple[float, float, float] | None] = []
        for members in self.members:
            if not any(active[k] for k in members):
                out.append(None)  # the setting's run ends where its last member stopped
                continue
            points = [values[k] for k in members]
            mean = math.fsum(points) / len(points)
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in points) / len(points))
            out.append((mean, mean - std, mean + std))
        return out


def settings_of(hparams: Sequence[Mapping[str, Any]]) -> Settings | None:
    """The members' settings when every member carries a ``fold``; else None.

    Example:
        >>> s = settings_of([{"lr": 0.1, "fold": 0}, {"lr": 0.1, "fold": 1},
        ...                  {"lr": 0.01, "fold": 0}, {"lr": 0.01, "fold": 1}])
        >>> s.members, s.folders
        ([[0, 1], [2, 3]], ['lr=0.1', 'lr=0.01'])
        >>> s.hparams
        [{'lr': 0.1, 'folds': 2}, {'lr': 0.01, 'folds': 2}]
    """
    if not hparams or not all("fold" in own for own in hparams):
        return None
    groups: dict[tuple[Any, ...], list[int]] = {}
    owns: dict[tuple[Any, ...], dict[str, Any]] = {}
    for k, own in enumerate(hparams):
        setting = {name: value for name, value in own.items() if name != "fold"}
        group = tuple(sorted(setting.items(), key=lambda item: item[0]))
        groups.setdefault(group, []).append(k)
        owns.setdefault(group, setting)
    settings = [owns[group] for group in groups]
    folders = member_labels(settings, lambda k: f"setting_{k:02d}")
    differ = set(differing_keys(settings))
    shown = [
        {**{name: value for name, value in own.items() if name in differ},
         "folds": len(members)}
        for own, members in zip(settings, groups.values(), strict=True)
    ]  # fmt: skip
    return Settings(list(groups.values()), folders, shown)
