"""Stages: lazy functions from a stream of events to a stream of events, composed by ``pipe``."""

from .progress_bar import progress
from .selection import early_stop, take
from .side_effects import print_keys, tap, tick
from .tracking import BestModel, best_model
from .transforms import augment, ema

__all__ = [
    "BestModel",
    "augment",
    "best_model",
    "early_stop",
    "ema",
    "print_keys",
    "progress",
    "take",
    "tap",
    "tick",
]
