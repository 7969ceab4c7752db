"""What a stage right after a source may still set before the source's first epoch.

:func:`fitstream.resumable` restores a run before its source trains: weights and optimizer
states go into the user's own objects, but which ensemble members were frozen lives in the
:class:`fitstream.Ensemble`, which :func:`fitstream.ensemble_stream` builds at its first
``next()``. The source registers here the list of members to freeze when it starts; the
stage finds it by the stream object. Nothing else is kept: the entry goes with the stream.
"""

from __future__ import annotations

import weakref

__all__ = ["frozen_at_start", "offer_frozen_at_start"]

_FROZEN: weakref.WeakKeyDictionary[object, list[int]] = weakref.WeakKeyDictionary()


def offer_frozen_at_start(stream: object, pending: list[int]) -> None:
    """Register ``pending``, the list of members ``stream`` freezes when it starts.

    Example:
        >>> def source():
        ...     yield {"step": 1}
        >>> stream = source()
        >>> pending = []
        >>> offer_frozen_at_start(stream, pending)
        >>> frozen_at_start(stream) is pending, frozen_at_start(iter([]))
        (True, None)
    """
    _FROZEN[stream] = pending


def frozen_at_start(stream: object) -> list[int] | None:
    """The list ``stream`` freezes at its start (append to it), or None if it has none."""
    try:
        return _FROZEN.get(stream)
    except TypeError:  # not weak-referenceable: not a registered source
        return None
