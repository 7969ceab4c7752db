"""Sources: the iterables that train a model and yield one event per epoch."""

from .batching import iter_batches, steps_per_epoch
from .ensemble.stacking import Ensemble
from .ensemble.stream import ensemble_stream
from .single.epochs import epoch_stream

__all__ = ["Ensemble", "ensemble_stream", "epoch_stream", "iter_batches", "steps_per_epoch"]
