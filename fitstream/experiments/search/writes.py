"""Storage writes that survive a busy database and are not cut in half by Ctrl-C.

Two faults of a search's writes to an Optuna storage, handled here in one place:

- **Ctrl-C inside a write.** A ``KeyboardInterrupt`` raised in the middle of a SQLite write
  leaves the transaction's lock held, so the clean-up that should tell the trials ``FAIL``
  fails too, and its error hides the interrupt. :func:`write` holds Ctrl-C back for the
  duration of one write (on the main thread, where Python delivers it) and raises it right
  after, so every write is whole and the interrupt reaches the user.
- **A locked database.** SQLite allows one writer at a time; a worker that finds the file
  locked longer than its timeout gets ``StorageInternalError`` ("database is locked").
  :func:`write` tries again, with growing pauses, for up to about half a minute. Any other
  storage error is raised at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["deferred_interrupt", "is_locked", "write"]

T = TypeVar("T")

_LOCKED = ("database is locked", "database table is locked", "could not obtain lock",
           "deadlock detected", "lock timeout", "busy")  # fmt: skip
_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0)


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database was locked by another writer.

    Example:
        >>> is_locked(RuntimeError("(sqlite3.OperationalError) database is locked"))
        True
        >>> is_locked(RuntimeError("value exceeds max length"))
        False
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        text = str(seen).lower()
        if any(part in text for part in _LOCKED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back for the block; raise the ``KeyboardInterrupt`` once the block is done.

    On a thread other than the main one (which Python never interrupts) it does nothing. A
    handler of the user's own is called after the block with the held signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda number, frame: held.append((number, frame)))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        if previous is signal.default_int_handler or not callable(previous):
            raise KeyboardInterrupt
        previous(*held[0])


def write(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, one storage write, whole and retried while locked."""
    for pause in (*_PAUSES, None):
        try:
            with deferred_interrupt():
                return fn(*args, **kwargs)
        except Exception as exc:
            if pause is None or not is_locked(exc):
                raise
        time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
