"""Sources: the iterables that train a model and yield one event per epoch."""

from .batching import iter_batches
from .ensemble import ensemble_stream
from .epochs import epoch_stream
from .stacking import Ensemble

__all__ = ["Ensemble", "ensemble_stream", "epoch_stream", "iter_batches"]
