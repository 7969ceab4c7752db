"""Which way a metric improves: the one rule every stage that compares values uses.

A key's direction is read from the words of its name (split at anything that is not a letter
or a digit, last word first), then from the words it contains: losses and errors improve
downwards, accuracies and scores upwards. A key that names neither has no inferred
direction; the stages that compare values then ask for ``mode="min"`` or ``mode="max"``.
"""

from __future__ import annotations

import re
import warnings

__all__ = ["MODES", "infer_mode", "legacy_mode", "lower_is_better", "resolve_mode"]

MODES = ("min", "max")

_MIN_WORDS = frozenset(
    {
        "loss", "losses", "error", "err", "errors", "mse", "mae", "rmse", "msle", "mape",
        "smape", "nll", "nlll", "perplexity", "ppl", "bce", "ce", "xent", "entropy", "cost",
        "regret", "wer", "cer", "distance", "divergence", "kl", "time", "sec", "seconds",
    }
)  # fmt: skip
_MAX_WORDS = frozenset(
    {
        "acc", "accuracy", "f1", "fscore", "auc", "auroc", "auprc", "roc", "ap", "map",
        "precision", "prec", "recall", "r2", "score", "iou", "miou", "dice", "jaccard",
        "kappa", "mcc", "ndcg", "bleu", "rouge", "top1", "top5", "reward", "return",
        "likelihood", "psnr", "ssim", "similarity",
    }
)  # fmt: skip
_MIN_PARTS = ("loss", "error", "mse", "mae", "nll", "perplexity")
_MAX_PARTS = ("accuracy", "acc", "f1", "auc", "precision", "recall", "score", "iou", "dice")


def infer_mode(key: str) -> str | None:
    """Return ``"min"``, ``"max"``, or ``None`` when the name of ``key`` tells neither.

    Example:
        >>> infer_mode("val_loss"), infer_mode("val_acc"), infer_mode("test_r2")
        ('min', 'max', 'max')
        >>> infer_mode("valloss"), infer_mode("top1accuracy"), infer_mode("val_wobble")
        ('min', 'max', None)
    """
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    for word in reversed(words):
        if word in _MIN_WORDS:
            return "min"
        if word in _MAX_WORDS:
            return "max"
    lowered = key.lower()
    lower = any(part in lowered for part in _MIN_PARTS)
    higher = any(part in lowered for part in _MAX_PARTS)
    if lower != higher:
        return "min" if lower else "max"
    return None


def resolve_mode(key: str, mode: object, *, func: str, arg: str = "mode") -> str:
    """Return ``mode`` checked, or the direction inferred from ``key`` when ``mode`` is None.

    Raises:
        ValueError: ``mode`` is neither ``"min"``, ``"max"`` nor None, or it is None and the
            name of ``key`` tells no direction (the message lists both choices).

    Example:
        >>> resolve_mode("val_acc", None, func="f"), resolve_mode("val_acc", "min", func="f")
        ('max', 'min')
        >>> resolve_mode("val_wobble", None, func="f")
        Traceback (most recent call last):
        ...
        ValueError: f: cannot tell from its name whether 'val_wobble' improves up or down; ...
    """
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"{func}: '{arg}' must be 'min', 'max' or None, got {mode!r}")
        return str(mode)
    inferred = infer_mode(key)
    if inferred is None:
        raise ValueError(
            f"{func}: cannot tell from its name whether {key!r} improves up or down; pass "
            f"{arg}='min' (smaller is better, as for a loss) or {arg}='max' (larger is "
            "better, as for an accuracy)"
        )
    return inferred


def legacy_mode(mode: object, direction: object, *, func: str) -> object:
    """Return the mode given as ``mode=``, or as 0.4's ``direction=`` (with a warning).

    ``best_model`` took ``direction=`` in fitstream 0.4; every stage now takes ``mode=``. The
    old name keeps working and warns once per call site; giving both is an error.

    Example:
        >>> legacy_mode("max", None, func="best_model")
        'max'
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     legacy_mode(None, "max", func="best_model")
        'max'
        >>> str(caught[0].message)
        "best_model: 'direction' is the 0.4 name of 'mode'; write mode='max'"
    """
    if direction is None:
        return mode
    if mode is not None:
        raise TypeError(
            f"{func}: give 'mode' only ('direction' is its 0.4 name), got mode={mode!r} and "
            f"direction={direction!r}"
        )
    warnings.warn(
        f"{func}: 'direction' is the 0.4 name of 'mode'; write mode={direction!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return direction


def lower_is_better(key: str) -> bool:
    """Tell whether a smaller value of metric ``key`` is better, for values only shown.

    The inferred direction (:func:`infer_mode`); a key that tells none counts as larger is
    better, which is harmless where a best is only displayed, never acted on.

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("test_error"), lower_is_better("val_acc")
        (True, True, False)
    """
    return infer_mode(key) == "min"
