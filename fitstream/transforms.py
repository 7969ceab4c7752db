"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def augment(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def ema(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
