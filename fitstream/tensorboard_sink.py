"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def log_tensorboard(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def collect_tensorboard(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
