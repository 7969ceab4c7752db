"""Turn a push-style function into a pulled iterator: the generic thread-to-generator bridge.

Frameworks such as Lightning *push*: they call your hook once per epoch and keep control of
the loop. FitStream *pulls*: the consumer asks for the next event when it is ready.
:class:`PushStream` joins the two. It runs ``run(emit)`` in a worker thread and hands each
``emit(item)`` to the consumer through a strict rendezvous: the worker waits inside ``emit``
until the consumer asks for the *next* item, so while the consumer holds an item the
producer is paused (lockstep), and the two never run at the same time.

How the producer learns that the consumer is gone:

* ``emit(item)`` returns ``True`` while the consumer wants more and ``False`` once it has
  stopped normally (``close()``, ``break`` then garbage collection, the end of a ``with``
  block). The producer then finishes cleanly, e.g. by asking its framework to stop.
* If the consumer failed (an exception in its ``with`` block, in a stage of its pipeline, or
  a ``KeyboardInterrupt`` while it waited), ``emit`` and :meth:`Emitter.check` raise
  :class:`StreamAborted` inside the worker, so the framework's own failure handling runs. The
  consumer's exception reaches the consumer's caller unchanged.

Inside the stream's ``with`` block, a pipeline over it that is closed or dropped (its stage
generators close the stream with only ``GeneratorExit`` in flight) leaves the producer paused
until the block ends, and the block's end decides: an exception unwinding the block, which
the stage could not see, aborts the producer; a normal end stops it normally. So
``with PushStream(...) as items: for x in pipe(items, ...): raise ...`` fails the producer
exactly as a loop over ``items`` itself does.

An exception raised by the producer is re-raised from ``next()`` with its original type and
traceback. :meth:`PushStream.close` returns only after the worker thread has ended.
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

from ._internal.callables import check_arity
from ._internal.checks import describe
from ._internal.rendezvous import Channel, Emitter, StreamAborted, shut_down, work

__all__ = ["Emitter", "PushStream", "StreamAborted"]

T = TypeVar("T")

_POLL_SEC = 0.2
"""How often a waiting consumer wakes up, so that Ctrl-C is seen even when the OS delivers
SIGINT to another thread."""


def _finalize(channel: Channel) -> None:
    """Clean-up of a stream that was dropped without ``close()``."""
    error = shut_down(channel, None)
    if error is not None:
        warnings.warn(
            f"{channel.name}: the producer failed after its stream was abandoned: {error!r}",
            RuntimeWarning,
            stacklevel=1,
        )


class PushStream(Iterator[T]):
    """An iterator over the items that ``run(emit)`` emits from a worker thread.

    Nothing runs until the first ``next()``; then ``run`` starts in a daemon thread named
    ``"fitstream-bridge-<name>"``. Each item is handed over in lockstep (see the module
    docstring). Use it as a context manager, or call :meth:`close`, to stop early; a stream
    that is simply dropped is closed when it is garbage-collected. Only one consumer thread
    may iterate it.

    Args:
        run: The producer. It receives an :class:`Emitter` and calls it once per item.
        name: Names the thread and prefixes error messages, e.g. ``"fit_stream"``.
        expected: How many items the stream still expects, when the producer knows (such as
            a Trainer's ``max_epochs`` less the epochs done): its ``__length_hint__``, which a
            :func:`~fitstream.progress` bar reads for its total. ``None``: it does not say.

    Raises:
        TypeError: ``run`` is not callable, or cannot take one argument (the Emitter).

    Example:
        >>> def produce(emit):
        ...     for i in range(1, 4):
        ...         if not emit({"step": i}):
        ...             return
        >>> [ev["step"] for ev in PushStream(produce, name="steps")]
        [1, 2, 3]
        >>> def broken(emit):
        ...     emit(1)
        ...     raise ValueError("producer failed")
        >>> items = PushStream(broken)
        >>> next(items)
        1
        >>> next(items)
        Traceback (most recent call last):
        ...
        ValueError: producer failed
    """

    def __init__(
        self,
        run: Callable[[Emitter[T]], object],
        *,
        name: str = "stream",
        expected: Callable[[], int | None] | None = None,
    ) -> None:
        if not callable(run):
            raise TypeError(
                f"PushStream: 'run' must be a callable taking an Emitter, got {describe(run)}"
            )
        check_arity(run, 1, func="PushStream", arg="run", of="the Emitter")
        self._run: Callable[[Emitter[T]], object] | None = run
        self._ch = Channel(name)
        self._ambient = 0  # id of an exception the consumer was already handling at next()
        self._with_depth = 0  # how many `with` blocks over this stream are open
        self._close_deferred = False  # a pipeline was closed inside the `with` block
        self._finalizer = weakref.finalize(self, _finalize, self._ch)
        self._expected = expected

    @property
    def name(self) -> str:
        """The name given at construction.

        Example:
            >>> PushStream(lambda emit: None, name="demo").name
            'demo'
        """
        return self._ch.name

    @property
    def finished(self) -> bool:
        """Whether the producer has ended (or can no longer start, after :meth:`close`).

        Example:
            >>> items = PushStream(lambda emit: None)
            >>> items.finished, list(items), items.finished
            (False, [], True)
        """
        return self._ch.done

    def __iter__(self) -> PushStream[T]:
        return self

    def __length_hint__(self) -> int:
        """The items the producer says the stream still expects (``NotImplemented``: no say)."""
        count = None if self._expected is None or self._ch.done else self._expected()
        return NotImplemented if count is None else max(0, count)

    def __next__(self) -> T:
        ch = self._ch
        if self._close_deferred:  # a pipeline over this stream closed it inside the with block
            self._close_deferred = False
            self._close_normally()
        if ch.done and not ch.has_item:
            return self._end()
        if not ch.started:
            self._start()
        self._ambient = id(sys.exc_info()[1])
        try:
            with ch.cond:
                ch.wanted = True
                ch.cond.notify_all()
                while not ch.has_item and not ch.done:
                    ch.cond.wait(_POLL_SEC)
                if ch.has_item:
                    item = ch.item
                    ch.item, ch.has_item, ch.wanted = None, False, False
                    return item  # type: ignore[return-value]
        except BaseException as exc:  # e.g. KeyboardInterrupt while the producer works
            self.abort(exc)
            raise
        return self._end()

    def _start(self) -> None:
        ch, run = self._ch, self._run
        assert run is not None
        thread = threading.Thread(
            target=work, args=(ch, run), name=f"fitstream-bridge-{ch.name}", daemon=True
        )
        self._run = None
        with ch.cond:
            ch.started, ch.thread = True, thread
        try:
            thread.start()
        except BaseException as exc:
            with ch.cond:
                ch.done, ch.thread = True, None
            raise RuntimeError(
                f"{ch.name}: could not start the worker thread that runs the producer: {exc}"
            ) from exc

    def _end(self) -> T:
        """The producer is done: join it, then raise its error once, else StopIteration."""
        ch = self._ch
        thread = ch.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        error, ch.error = ch.error, None
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and wait until its thread has ended.

        Called while a new exception is propagating (e.g. from a stage's ``finally`` block as
        that stage fails), it behaves like :meth:`abort` with that exception, so the run is
        marked failed. Called with ``GeneratorExit`` in flight inside the stream's ``with``
        block (a pipeline over the stream is being closed or dropped, perhaps because an
        exception is unwinding the block, which ``close`` cannot see), it leaves the producer
        paused and lets the end of the block decide: abort on an exception, else a normal
        stop; the stream yields nothing more either way. Otherwise the producer's next ``emit``
        returns ``False`` and it finishes normally. An exception the producer raises while
        finishing is raised here. Calling it again does nothing.

        Example:
            >>> def produce(emit):
            ...     i = 0
            ...     while emit(i):
            ...         i += 1
            ...     print("finished cleanly after", i)
            >>> items = PushStream(produce)
            >>> next(items), next(items)
            (0, 1)
            >>> items.close()
            finished cleanly after 1
            >>> list(items)
            []
        """
        pending = sys.exc_info()[1]
        if isinstance(pending, GeneratorExit) and self._with_depth > 0:
            self._close_deferred = True  # __exit__ knows whether the block failed
            return
        if (
            pending is not None
            and not isinstance(pending, GeneratorExit | StopIteration)
            and id(pending) != self._ambient
        ):
            self.abort(pending)
            return
        self._close_normally()

    def _close_normally(self) -> None:
        self._finalizer.detach()
        error = shut_down(self._ch, None)
        if error is not None:
            raise error

    def abort(self, reason: BaseException) -> None:
        """Stop the producer as failed because of ``reason``, and wait until its thread ended.

        The producer's pending ``emit`` (or its next :meth:`Emitter.check`) raises
        :class:`StreamAborted` with ``reason`` attached. ``abort`` does not raise ``reason``
        itself: the caller re-raises its own exception. If the producer fails in another way
        while unwinding, that error is reported as a :class:`RuntimeWarning`.

        Example:
            >>> def produce(emit):
            ...     try:
            ...         emit(1)
            ...     except StreamAborted as exc:
            ...         print("aborted because of", repr(exc.reason))
            ...         raise
            >>> items = PushStream(produce)
            >>> next(items)
            1
            >>> items.abort(KeyboardInterrupt())
            aborted because of KeyboardInterrupt()
        """
        self._finalizer.detach()
        error = shut_down(self._ch, reason)
        if error is not None:
            warnings.warn(
                f"{self._ch.name}: the producer also failed while stopping after "
                f"{type(reason).__name__}: {error!r}",
                RuntimeWarning,
                stacklevel=2,
            )

    def __enter__(self) -> PushStream[T]:
        self._with_depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._with_depth = max(0, self._with_depth - 1)
        self._close_deferred = False
        if exc is None or isinstance(exc, GeneratorExit):
            self._close_normally()
        else:
            self.abort(exc)
