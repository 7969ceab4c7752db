"""Stages: lazy functions from a stream of events to a stream of events, composed by ``pipe``."""

from .checkpointing import checkpoint, resume
from .control import reduce_lr_on_plateau, stop_on_nonfinite
from .progress_bar import progress
from .pruning import prune
from .resuming import resumable
from .selection import early_stop, take
from .side_effects import print_keys, tap, tick
from .tracking import BestModel, best_model
from .transforms import augment, ema

__all__ = [
    "BestModel",
    "augment",
    "best_model",
    "checkpoint",
    "early_stop",
    "ema",
    "print_keys",
    "progress",
    "prune",
    "reduce_lr_on_plateau",
    "resumable",
    "resume",
    "stop_on_nonfinite",
    "take",
    "tap",
    "tick",
]
