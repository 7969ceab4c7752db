"""Storage writes that survive a busy database and are not cut in half by Ctrl-C.

Two faults of a search's writes to an Optuna storage, handled here in one place:

- **Ctrl-C inside a write.** A ``KeyboardInterrupt`` raised in the middle of a SQLite write
  leaves the transaction's lock held, so the clean-up that should tell the trials ``FAIL``
  fails too, and its error hides the interrupt. :func:`write` holds Ctrl-C back for the
  duration of one write (on the main thread, where Python delivers it) and raises it right
  after, so every write is whole and the interrupt reaches the user.
- **Ctrl-C swallowed.** A ``KeyboardInterrupt`` that lands in a garbage collector's callback
  (SQLAlchemy has some) is printed as "Exception ignored" and dropped, so the search would
  train on. :class:`KeptInterrupt` remembers every Ctrl-C the search receives, and raises it
  again at the next epoch boundary if it never reached the search.
- **A locked database.** SQLite allows one writer at a time; a worker that finds the file
  locked longer than its timeout gets ``StorageInternalError`` ("database is locked").
  :func:`write` tries again, with growing pauses, for up to about half a minute. Any other
  storage error is raised at once.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["KeptInterrupt", "already_finished", "deferred_interrupt", "is_locked", "read", "write"]

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


def write(
    fn: Callable[..., T],
    *args: Any,
    done: Callable[[T], object] | None = None,
    give_up: threading.Event | None = None,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)``, one storage write, whole and retried while locked.

    ``done(result)`` runs within the same shelter from Ctrl-C: what the caller must record of
    the write (the trial it asked, the trial it told) is recorded before an interrupt that
    came meanwhile is raised. A set ``give_up`` stops the retries (the heartbeat's thread,
    stopping).
    """
    for pause in (*_PAUSES, None):
        if give_up is not None and give_up.is_set():
            pause = None  # noqa: PLW2901 - the last try
        try:
            with deferred_interrupt():
                result = fn(*args, **kwargs)
                if done is not None:
                    done(result)
                return result
        except Exception as exc:
            if pause is None or not is_locked(exc):
                raise
        time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


class KeptInterrupt:
    """While the search runs (main thread), remember each Ctrl-C until it reaches the search.

    The handler raises ``KeyboardInterrupt`` at once, as Python's own does, and notes it;
    :meth:`check`, called at each epoch boundary, raises it again if it was swallowed on the
    way (in a ``__del__`` or a weakref callback); :meth:`reached` clears it once the search
    has it. A handler of the user's own is left in place.
    """

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None

    def __enter__(self) -> KeptInterrupt:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, number: int, frame: Any) -> None:
        self.pending = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise a Ctrl-C that never reached the search."""
        if self.pending:
            raise KeyboardInterrupt

    def reached(self) -> None:
        """The search has the interrupt: nothing is pending."""
        self.pending = False


def read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, a read of the storage, as :func:`write` calls a write.

    An RDB read is a transaction too: cut in half by Ctrl-C, it would keep its lock.
    """
    return write(functools.partial(fn, *args, **kwargs))


def already_finished(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage's refusal to change a trial that has finished.

    Newer Optuna raises ``UpdateFinishedTrialError`` (a ``RuntimeError``); Optuna 4.0 raised a
    plain ``RuntimeError`` that says so.

    Example:
        >>> already_finished(RuntimeError("Trial#3 has already finished and can not be updated."))
        True
        >>> already_finished(RuntimeError("database is locked"))
        False
    """
    named = type(exc).__name__ == "UpdateFinishedTrialError"
    return named or (isinstance(exc, RuntimeError) and "has already finished" in str(exc))
