"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def best_model(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


class BestModel:
    """Placeholder."""
