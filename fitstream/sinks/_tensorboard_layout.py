"""Where :func:`fitstream.log_tensorboard` puts each value: the run (sub-folder) and the tag.

The layout follows Keras's TensorBoard callback, so the default Time Series tab opens on the
curves with training and validation of one metric overlaid on one chart:

- a metric's data split becomes a *run*, a sub-folder of the log folder: ``train_loss`` goes
  to ``<log_dir>/train``, ``val_loss`` to ``<log_dir>/validation``, ``test_loss`` to
  ``<log_dir>/test``; a key with no split (``lr``) goes to ``train`` too, as in Keras;
- the *tag* is the metric once its split is removed, under the x-axis it is drawn against:
  ``epoch/loss``, so TensorBoard shows every chart in one group, ``epoch``. The prefix keeps
  the tags apart from what a Lightning ``TensorBoardLogger`` writes at the global step when
  the two share a log folder;
- the running best of a validation metric, written when the run is an HParams session (for
  the table's metric columns), is the curve ``hparams/<metric>_best`` in the same run: a
  group of its own, after ``epoch``, so the first screen shows the curves themselves, and
  in the Custom Scalars chart of its metric;
- the members of an ensemble each get a folder, ``member_03/train``, ``member_03/validation``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from .._internal.direction import lower_is_better
from ._tensorboard_settings import BAND_GROUP, band_tags

__all__ = [
    "BEST_GROUP",
    "LAYOUT_CATEGORY",
    "RunningBest",
    "TagMap",
    "best_tag",
    "custom_scalars_layout",
    "lower_is_better",
    "member_folder",
    "split_of",
]

LAYOUT_CATEGORY = "fitstream"
"""The Custom Scalars category that holds one chart per metric."""

_RUNS = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}
_SPLIT = "|".join(sorted(_RUNS, key=len, reverse=True))
_PREFIXED = re.compile(rf"^(?P<split>{_SPLIT})[_/](?P<stem>.+)$", re.IGNORECASE)
_SUFFIXED = re.compile(rf"^(?P<stem>.+)[_/](?P<split>{_SPLIT})$", re.IGNORECASE)
BEST_SUFFIX = "_best"
BEST_GROUP = "hparams/"  # the Time Series group of the running bests


def split_of(key: str) -> tuple[str, str]:
    """Return ``(run, metric)``: the run a key's split maps to and the metric without it.

    Example:
        >>> split_of("train_loss"), split_of("val/acc"), split_of("loss_test"), split_of("lr")
        (('train', 'loss'), ('validation', 'acc'), ('test', 'loss'), ('train', 'lr'))
    """
    match = _PREFIXED.match(key) or _SUFFIXED.match(key)
    if match is None:
        return "train", key
    return _RUNS[match.group("split").lower()], match.group("stem")


def member_folder(member: int, size: int) -> str:
    """Return the folder of ensemble member ``member`` of ``size``: zero-padded, so they sort.

    Example:
        >>> member_folder(3, 8), member_folder(3, 120)
        ('member_03', 'member_003')
    """
    return f"member_{member:0{max(2, len(str(size - 1)))}d}"


class TagMap:
    """Each event key's ``(run, tag)``, chosen once; a key never shares another key's tag.

    Two keys that land on one place (``loss`` and ``train_loss`` are both the train run's
    ``epoch/loss``) are kept apart: the later one keeps its whole name (``epoch/train_loss``).

    Example:
        >>> tags = TagMap()
        >>> tags.place("val_loss"), tags.place("loss"), tags.place("train_loss")
        (('validation', 'epoch/loss'), ('train', 'epoch/loss'), ('train', 'epoch/train_loss'))
        >>> tags.best("val_loss")
        ('validation', 'hparams/loss_best')
    """

    def __init__(self) -> None:
        self._placed: dict[str, tuple[str, str]] = {}
        self._taken: set[tuple[str, str]] = set()

    def _claim(self, name: str, run: str, tag: str, fallback: str) -> tuple[str, str]:
        if name not in self._placed:
            place = (run, tag) if (run, tag) not in self._taken else (run, fallback)
            self._placed[name] = place
            self._taken.add(place)
        return self._placed[name]

    def place(self, key: str) -> tuple[str, str]:
        """Return the ``(run, tag)`` of ``key``'s curve."""
        run, metric = split_of(key)
        return self._claim(key, run, f"epoch/{metric}", f"epoch/{key}")

    def best(self, key: str) -> tuple[str, str]:
        """Return the ``(run, tag)`` of ``key``'s running best (see :func:`best_tag`)."""
        run, tag = self.place(key)
        best = best_tag(tag)
        return self._claim(f"\0best\0{key}", run, best, best + "_")


def best_tag(tag: str) -> str:
    """The tag of the running best of curve ``tag``.

    Example:
        >>> best_tag("epoch/loss")
        'hparams/loss_best'
    """
    return BEST_GROUP + tag.removeprefix("epoch/") + BEST_SUFFIX


def custom_scalars_layout(tags: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """Return the Custom Scalars layout: one chart per metric, the same as Time Series.

    Each chart matches its tag in every run (train, validation, each member), and its running
    best when there is one; regular expressions match whole tags. A metric with a band (a
    grid's settings: ``folds/<metric>_low`` and ``_high``) gets a second chart, of the margin
    kind, that draws each run's mean inside its band.

    Example:
        >>> custom_scalars_layout(["epoch/loss", "hparams/loss_best", "epoch/acc"])
        {'fitstream': {'acc': ['Multiline', ['^epoch/acc$']], \
'loss': ['Multiline', ['^epoch/loss$', '^hparams/loss_best$']]}}
        >>> custom_scalars_layout(["epoch/acc", "folds/acc_low", "folds/acc_high"])["fitstream"]
        {'acc': ['Multiline', ['^epoch/acc$']], \
'acc (mean ± std over folds)': ['Margin', ['epoch/acc', 'folds/acc_low', 'folds/acc_high']]}
    """
    tags = set(tags)
    bests = {best_tag(tag) for tag in tags}
    charts: dict[str, list[Any]] = {}
    for tag in sorted(tags):
        if tag in bests or tag.startswith(BAND_GROUP):
            continue  # drawn in its metric's chart
        shown = [tag] + ([best_tag(tag)] if best_tag(tag) in tags else [])
        title = tag.removeprefix("epoch/")
        charts[title] = ["Multiline", [f"^{re.escape(t)}$" for t in shown]]
        low, high = band_tags(tag)
        if low in tags and high in tags:  # a grid's setting: its mean, and a band around it
            charts[f"{title} (mean ± std over folds)"] = ["Margin", [tag, low, high]]
    return {LAYOUT_CATEGORY: charts} if charts else {}


class RunningBest:
    """The best finite value so far of each series: the minimum for losses, else the maximum.

    Example:
        >>> best = RunningBest()
        >>> [best.update("val_loss", v) for v in (0.5, float("nan"), 0.3, 0.4)]
        [0.5, 0.5, 0.3, 0.3]
        >>> best.update("val_acc", float("nan")) is None
        True
    """

    def __init__(self) -> None:
        self._best: dict[Any, float] = {}

    def update(self, series: Any, value: float, *, key: str | None = None) -> float | None:
        """Record ``value`` of ``series`` (metric ``key``, the series itself by default)."""
        direction_of = series if key is None else key
        best = self._best.get(series)
        if math.isfinite(value):
            if best is None:
                best = value
            else:
                best = min(best, value) if lower_is_better(direction_of) else max(best, value)
            self._best[series] = best
        return best
