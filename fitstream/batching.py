"""The module path fitstream 0.4 had for :func:`fitstream.iter_batches`, kept for its users.

New code imports it from the package: ``from fitstream import iter_batches``.
"""

from .sources.batching import iter_batches

__all__ = ["iter_batches"]
