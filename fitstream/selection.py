"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def take(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def early_stop(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
