"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def validation_loss(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
