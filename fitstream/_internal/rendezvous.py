"""The rendezvous under :mod:`fitstream.bridge`: shared state, the producer's handle, the worker.

Public names defined here (:class:`Emitter`, :class:`StreamAborted`) are documented and
imported as ``fitstream.bridge.Emitter`` and ``fitstream.bridge.StreamAborted``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Channel", "Emitter", "StreamAborted", "shut_down", "work"]

T = TypeVar("T")


class StreamAborted(BaseException):
    """Raised inside the producer when the consumer of a stream failed.

    It derives from :class:`BaseException` (like :class:`GeneratorExit`) so that a producer's
    ``except Exception`` does not swallow it. The bridge recognises it when it leaves ``run``
    and does not report it again; the consumer sees its own exception instead.

    Attributes:
        reason: The exception that made the consumer stop.

    Example:
        >>> err = StreamAborted("consumer failed", reason=ValueError("bad"))
        >>> err.reason
        ValueError('bad')
    """

    def __init__(self, message: str, *, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class Channel:
    """State shared by the consumer side, the emitter and the worker thread.

    Only the consumer-side :class:`fitstream.bridge.PushStream` refers to it from outside the
    worker, and the worker never refers back to the stream, so dropping the stream frees it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.item: object = None
        self.has_item = False
        self.wanted = False
        self.stop = False
        self.abort: BaseException | None = None
        self.started = False
        self.done = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class Emitter(Generic[T]):
    """The producer's handle: call it with each item; ask it whether to go on.

    ``run(emit)`` receives one. ``emit(item)`` blocks until the consumer has taken ``item``
    and asked for the next one, then returns ``True``; it returns ``False`` at once when the
    consumer has stopped (the producer should finish up without emitting more).

    Example:
        >>> from fitstream.bridge import PushStream
        >>> def produce(emit):
        ...     for i in range(100):
        ...         if not emit(i):
        ...             print("consumer gone after", i)
        ...             return
        >>> with PushStream(produce, name="demo") as items:
        ...     next(items), next(items)
        (0, 1)
        consumer gone after 1
    """

    __slots__ = ("_ch",)

    def __init__(self, channel: Channel) -> None:
        self._ch = channel

    def __call__(self, item: T) -> bool:
        """Hand ``item`` to the consumer and wait until it wants another one.

        Returns:
            ``True`` to go on, ``False`` once the consumer has stopped normally.

        Raises:
            StreamAborted: The consumer failed; the producer should unwind as failed.
        """
        ch = self._ch
        with ch.cond:
            self._raise_if_aborted()
            if ch.stop:
                return False
            ch.item, ch.has_item = item, True
            ch.cond.notify_all()
            while not ((ch.wanted and not ch.has_item) or ch.stop or ch.abort is not None):
                ch.cond.wait()
            self._raise_if_aborted()
            return not ch.stop

    @property
    def stopped(self) -> bool:
        """Whether the consumer has stopped (normally or by failing).

        Example:
            >>> from fitstream.bridge import PushStream
            >>> def produce(emit):
            ...     emit(1)
            ...     print("stopped:", emit.stopped)
            >>> with PushStream(produce) as items:
            ...     next(items)
            1
            stopped: True
        """
        return self._ch.stop or self._ch.abort is not None

    def check(self) -> None:
        """Raise :class:`StreamAborted` if the consumer has failed; cheap enough for every batch.

        Producers call it at frequent checkpoints (e.g. each training batch) so that a
        consumer's ``KeyboardInterrupt`` stops the work promptly.

        Example:
            >>> from fitstream.bridge import PushStream
            >>> def produce(emit):
            ...     emit.check()  # nothing happened: returns quietly
            ...     emit("done")
            >>> list(PushStream(produce))
            ['done']
        """
        if self._ch.abort is not None:
            with self._ch.cond:
                self._raise_if_aborted()

    def _raise_if_aborted(self) -> None:
        reason = self._ch.abort
        if reason is not None:
            raise StreamAborted(
                f"{self._ch.name}: the consumer stopped with {type(reason).__name__}: {reason}",
                reason=reason,
            )


def work(channel: Channel, run: Callable[[Emitter[T]], object]) -> None:
    """Body of the worker thread: run the producer, record how it ended."""
    try:
        run(Emitter(channel))
    except StreamAborted as exc:
        if exc.reason is None or exc.reason is not channel.abort:
            channel.error = exc  # not ours: a producer raised it on its own
    except BaseException as exc:
        channel.error = exc
    finally:
        with channel.cond:
            channel.done = True
            channel.cond.notify_all()


def shut_down(channel: Channel, abort: BaseException | None) -> BaseException | None:
    """Tell the worker to stop (or abort), wait for it, and return an error it left behind."""
    with channel.cond:
        if not channel.started:
            channel.started = channel.done = True  # never started: nothing can start it now
            return None
        if abort is not None and channel.abort is None and not channel.done:
            channel.abort = abort
        channel.stop = True
        channel.cond.notify_all()
    thread = channel.thread
    if thread is None or thread is threading.current_thread():
        return None  # called from the producer itself (e.g. by the garbage collector)
    thread.join()
    error, channel.error = channel.error, None
    if isinstance(error, StreamAborted) and error.reason is channel.abort:
        return None
    return error
