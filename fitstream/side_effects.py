"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def tap(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def tick(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def print_keys(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
