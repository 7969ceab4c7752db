"""Placeholder while this module is being written (replaced before merge)."""

from typing import Any


def collect(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def collect_jsonl(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError


def collect_pd(*args: Any, **kwargs: Any) -> Any:
    """Placeholder."""
    raise NotImplementedError
