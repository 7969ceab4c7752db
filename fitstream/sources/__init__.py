"""Sources: the iterables that train a model and yield one event per epoch."""

from .batching import iter_batches
from .epochs import epoch_stream

__all__ = ["epoch_stream", "iter_batches"]
