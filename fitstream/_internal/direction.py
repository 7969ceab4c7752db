"""Which way a metric improves, guessed from its name (for bests shown or logged)."""

from __future__ import annotations

__all__ = ["lower_is_better"]

_LOWER_IS_BETTER = ("loss", "err", "mse", "mae", "perplexity", "time")


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
