"""One stream or fit per Trainer at a time: refuse a second entry while one is paused.

Lightning's ``fit``, ``validate``, ``test`` and ``predict`` change the Trainer (its state,
``training``, ``should_stop``, the strategy's module) before any hook runs, and our helper
callbacks are still in ``trainer.callbacks`` while a stream is paused. So a second call on
that Trainer would corrupt the paused fit and then hand its own epochs to the paused stream,
blocking for ever. :class:`EntryGuard` refuses such a call at once, before Lightning touches
anything: while it is installed, the four methods of that one Trainer instance raise
:class:`RuntimeError`. The Trainer class and other Trainers are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn

from lightning.pytorch import Trainer

__all__ = ["ENTRY_POINTS", "EntryGuard"]

ENTRY_POINTS = ("fit", "validate", "test", "predict")


class EntryGuard:
    """Shadows a Trainer's entry points with methods that raise, until :meth:`remove`.

    Args:
        trainer: The Trainer to guard.
        message: Says who holds the Trainer and what to do; it follows
            ``"trainer.fit() cannot run now: "``.

    Example:
        >>> trainer = Trainer(accelerator="cpu", logger=False)
        >>> with EntryGuard(trainer, "a stream is paused"):
        ...     trainer.validate()
        Traceback (most recent call last):
        ...
        RuntimeError: trainer.validate() cannot run now: a stream is paused
        >>> "validate" in vars(trainer)  # removed again
        False
    """

    def __init__(self, trainer: Trainer, message: str) -> None:
        self.trainer = trainer
        self.message = message
        self._saved: dict[str, Any] | None = None

    def install(self) -> None:
        """Make the entry points raise; what the instance had before is kept for :meth:`remove`."""
        if self._saved is not None:
            return
        attributes = vars(self.trainer)
        self._saved = {name: attributes[name] for name in ENTRY_POINTS if name in attributes}
        for name in ENTRY_POINTS:
            attributes[name] = self._refusal(name)

    def remove(self) -> None:
        """Give the Trainer its entry points back (doing nothing if not installed)."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        attributes = vars(self.trainer)
        for name in ENTRY_POINTS:
            if name in saved:
                attributes[name] = saved[name]
            else:
                attributes.pop(name, None)

    def _refusal(self, name: str) -> Callable[..., NoReturn]:
        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            raise RuntimeError(f"trainer.{name}() cannot run now: {self.message}")

        return refuse

    def __enter__(self) -> EntryGuard:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()
