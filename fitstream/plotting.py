"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def plot_history(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def live_plot(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
