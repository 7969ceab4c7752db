"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def epoch_stream(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
