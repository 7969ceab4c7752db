"""What :func:`fitstream.log_tensorboard` writes besides plain scalars.

- The custom-scalars layout: tags that share a *stem* (``train_loss`` and ``val_loss`` share
  ``loss``) get one multi-line chart.
- The hyperparameters of the run with the final and best value of every logged metric, for
  TensorBoard's HParams tab.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .._internal.values import scalar_value

__all__ = [
    "LAYOUT_CATEGORY",
    "MetricHistory",
    "check_hparams",
    "custom_scalars_layout",
    "lower_is_better",
    "metric_stem",
    "write_hparams",
]

LAYOUT_CATEGORY = "fitstream"
"""The custom-scalars category that holds the charts of metrics sharing a stem."""

_SPLIT = r"(?:train|training|val|valid|validation|test)"
_PREFIXED = re.compile(rf"^{_SPLIT}[_/](?P<stem>.+)$", re.IGNORECASE)
_SUFFIXED = re.compile(rf"^(?P<stem>.+)[_/]{_SPLIT}$", re.IGNORECASE)
_LOWER_IS_BETTER = ("loss", "err", "mse", "mae", "perplexity", "time")


def metric_stem(tag: str) -> str | None:
    """Return the metric a tag measures once its data split is removed, or ``None``.

    The split is a leading or trailing ``train``, ``training``, ``val``, ``valid``,
    ``validation`` or ``test``, joined by ``_`` or ``/``.

    Example:
        >>> metric_stem("train_loss"), metric_stem("val/acc"), metric_stem("loss_test")
        ('loss', 'acc', 'loss')
        >>> metric_stem("lr") is None
        True
    """
    match = _PREFIXED.match(tag) or _SUFFIXED.match(tag)
    return match.group("stem") if match else None


def custom_scalars_layout(tags: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """Return the layout with one ``Multiline`` chart per stem shared by two or more tags.

    Each chart lists exact-match regular expressions (the custom-scalars plugin reads tags as
    regular expressions). The result has no charts when no stem is shared.

    Example:
        >>> custom_scalars_layout(["train_loss", "val_loss", "lr", "val_acc"])
        {'fitstream': {'loss': ['Multiline', ['^train_loss$', '^val_loss$']]}}
    """
    groups: dict[str, list[str]] = {}
    for tag in sorted(set(tags)):
        stem = metric_stem(tag)
        if stem is not None:
            groups.setdefault(stem, []).append(tag)
    charts = {
        stem: ["Multiline", [f"^{re.escape(tag)}$" for tag in members]]
        for stem, members in sorted(groups.items())
        if len(members) > 1
    }
    return {LAYOUT_CATEGORY: charts} if charts else {}


def lower_is_better(key: str) -> bool:
    """Tell whether a smaller value of metric ``key`` is better.

    True when the key contains ``loss``, ``err`` (error), ``mse``, ``mae``, ``perplexity`` or
    ``time`` (case-insensitive); otherwise larger is better (accuracy, F1, AUC...).

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("test_error"), lower_is_better("val_acc")
        (True, True, False)
    """
    lowered = key.lower()
    return any(word in lowered for word in _LOWER_IS_BETTER)


class MetricHistory:
    """The last and the best value seen of each metric.

    Best is the minimum for :func:`lower_is_better` keys, else the maximum, over finite values
    (NaN when a metric never had one). The last value is kept as it came, NaN included.

    Example:
        >>> history = MetricHistory()
        >>> for loss, acc in [(0.5, 0.7), (0.3, 0.9), (0.4, 0.8)]:
        ...     history.update({"val_loss": loss, "val_acc": acc})
        >>> history.summary()
        {'final/val_loss': 0.4, 'best/val_loss': 0.3, 'final/val_acc': 0.8, 'best/val_acc': 0.9}
    """

    def __init__(self) -> None:
        self.final: dict[str, float] = {}
        self.best: dict[str, float] = {}

    def update(self, scalars: Mapping[str, float]) -> None:
        """Record one event's values."""
        for key, value in scalars.items():
            self.final[key] = value
            if not math.isfinite(value):
                self.best.setdefault(key, math.nan)
                continue
            best = self.best.get(key, math.nan)
            if math.isnan(best):
                self.best[key] = value
            else:
                self.best[key] = min(best, value) if lower_is_better(key) else max(best, value)

    def summary(self) -> dict[str, float]:
        """Return ``{"final/<key>": ..., "best/<key>": ...}`` for every metric seen."""
        result: dict[str, float] = {}
        for key, value in self.final.items():
            result[f"final/{key}"] = value
            result[f"best/{key}"] = self.best[key]
        return result


def check_hparams(hparams: object, *, caller: str) -> dict[str, bool | int | float | str] | None:
    """Check ``hparams`` and return it as a plain dict (``None`` values left out).

    Values must be numbers (0-d tensors and NumPy scalars are converted), strings or bools.

    Example:
        >>> check_hparams({"lr": 0.01, "layers": 2, "optimizer": "adam"}, caller="demo")
        {'lr': 0.01, 'layers': 2, 'optimizer': 'adam'}
        >>> check_hparams({"sizes": [64, 64]}, caller="demo")
        Traceback (most recent call last):
        ...
        TypeError: demo: hparams['sizes'] must be a number, str, bool or None, got list: [64, 64]...
    """
    if hparams is None:
        return None
    if not isinstance(hparams, Mapping):
        raise TypeError(
            f"{caller}: hparams must be a dict of hyperparameter names to values, got "
            f"{type(hparams).__name__}: {hparams!r:.80}"
        )
    checked: dict[str, bool | int | float | str] = {}
    for name, value in hparams.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{caller}: hparams keys must be non-empty str, got {name!r:.80}")
        if value is None:
            continue
        plain = value if isinstance(value, str) else scalar_value(value)
        if plain is None:
            raise TypeError(
                f"{caller}: hparams[{name!r}] must be a number, str, bool or None, got "
                f"{type(value).__name__}: {value!r:.80} (pass str(value) to record it as text)"
            )
        checked[name] = plain
    return checked


def write_hparams(
    writer: Any, hparams: Mapping[str, bool | int | float | str], history: MetricHistory, step: int
) -> None:
    """Write ``hparams`` into ``writer``'s own run, with the history's final and best values.

    Unlike ``SummaryWriter.add_hparams``, which opens a new sub-run, the summaries go to the
    writer's event file, so the HParams tab shows one row per run next to its scalars.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = history.summary()
    experiment, session_start, session_end = hparams_summaries(  # type: ignore[no-untyped-call]
        dict(hparams), metrics
    )
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary, step)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)
