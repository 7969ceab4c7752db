"""Import optional dependencies where they are used, with an error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, *, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says which extra installs it.

    Args:
        module: The module to import, e.g. ``"pandas"``.
        extra: The name of the FitStream extra that provides it, e.g. ``"pandas"``.
        feature: The FitStream name that needs it, e.g. ``"collect_pd"``.

    Returns:
        The imported module.

    Raises:
        ImportError: When the module is not installed.

    Example:
        >>> require("json", "none", feature="demo").__name__
        'json'
        >>> require("surely_not_installed_xyz", "plot", feature="plot_history")
        Traceback (most recent call last):
        ...
        ImportError: plot_history needs the optional dependency 'surely_not_installed_xyz'; ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", maxsplit=1)[0]
        raise ImportError(
            f"{feature} needs the optional dependency {top!r}; install it with "
            f"`pip install 'fitstream[{extra}]'` (or `uv add 'fitstream[{extra}]'`)."
        ) from exc
