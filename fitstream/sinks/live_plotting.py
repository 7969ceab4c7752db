"""A plot that redraws itself while training runs: :func:`live_plot` and :class:`LivePlot`."""

from __future__ import annotations

import io
import math
import os
import sys
import time
import weakref
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

from .._internal.optional import require
from ..pipeline import check_stream, is_stream, upstream
from . import _curves, _drawing

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LivePlot", "live_plot"]

_clock = time.monotonic
"""The clock that spaces redraws; tests replace it instead of sleeping."""


def _notebook_display() -> Any | None:
    """Return ``IPython.display`` inside a running Jupyter kernel, else ``None``.

    IPython is only looked up when it is already imported, as it always is in a kernel.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    import IPython.display

    return IPython.display


class LivePlot:
    """A figure of ``keys`` against ``step`` that follows a stream of events as it flows.

    Made by :func:`live_plot`, which documents the behaviour. Calling it on a stream gives
    the stream back (it is a stage); using it in a ``with`` block closes every stream it
    still follows at the end of the block, after a final draw.

    Example:
        >>> events = [{"step": i, "loss": 1 / i} for i in range(1, 4)]
        >>> with live_plot("loss") as lp:
        ...     steps = [ev["step"] for ev in lp(events)]
        >>> steps, lp.figure.axes[0].get_lines()[0].get_xdata().tolist()
        ([1, 2, 3], [1.0, 2.0, 3.0])
    """

    def __init__(
        self,
        *keys: str,
        min_interval: float = 1.0,
        save: str | os.PathLike[str] | None = None,
        figsize: tuple[float, float] | None = None,
        dpi: float = 100,
        title: str | None = None,
        ax: Axes | None = None,
    ) -> None:
        if len(keys) == 1 and isinstance(keys[0], tuple | list):
            keys = tuple(keys[0])  # fitstream 0.4 took the keys as one tuple
        self.keys = _curves.check_keys(list(keys), func="live_plot")
        if (
            isinstance(min_interval, bool)
            or not isinstance(min_interval, int | float)
            or not math.isfinite(min_interval)
            or min_interval < 0
        ):
            raise ValueError(
                f"live_plot: min_interval must be a number of seconds >= 0, "
                f"got {min_interval!r:.60}"
            )
        _curves.check_figsize(figsize, dpi, func="live_plot")
        if title is not None and not isinstance(title, str):
            raise TypeError(
                f"live_plot: title must be a string or None, got {type(title).__name__}: "
                f"{title!r:.60}"
            )
        require("matplotlib", "plot", feature="live_plot")
        from matplotlib.figure import Figure

        self.save = _curves.check_save(save, func="live_plot")
        _curves.check_ax(ax, figsize, func="live_plot")
        self.min_interval = float(min_interval)
        if self.save is not None:
            self.save.parent.mkdir(parents=True, exist_ok=True)
        self.title = title
        if ax is None:
            self._figure = Figure(figsize=figsize or _curves.DEFAULT_FIGSIZE, dpi=dpi)
            self._ax = self._figure.add_subplot()
        else:
            self._figure = _curves.figure_of(ax)
            self._ax = ax
        self._owned_ax = ax is None
        self._lines: list[Any] = []  # the curves drawn into an Axes given by the caller
        self._x: list[float] = []
        self._rows: list[dict[str, Any]] = []  # each event's values of keys
        self._drawn = 0  # events shown by the last draw
        self._last_draw: float | None = None
        self._handle: Any = None
        self._open: weakref.WeakSet[Generator[dict[str, Any], None, None]] = weakref.WeakSet()

    @property
    def figure(self) -> Figure:
        """The matplotlib figure, holding every event seen so far once the stream has ended."""
        return self._figure

    @property
    def ax(self) -> Axes:
        """The matplotlib Axes drawn into: the one given as ``ax=``, else the figure's own."""
        return self._ax

    def __call__(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Follow ``events``: pass each one through and redraw when ``min_interval`` allows."""
        check_stream(events, func="live_plot")
        stream = self._follow(events)
        self._open.add(stream)
        return stream

    def _follow(self, events: Iterable[dict[str, Any]]) -> Generator[dict[str, Any], None, None]:
        self._handle = None  # each stream shows its plot in the output of the cell running it
        self._last_draw = None
        with upstream(events) as it:
            try:
                for event in it:
                    self._record(event)
                    now = _clock()
                    if self._last_draw is None or now - self._last_draw >= self.min_interval:
                        self._last_draw = now
                        self.redraw()
                    yield event
            finally:
                if self._drawn < len(self._x):
                    self.redraw()

    def _record(self, event: dict[str, Any]) -> None:
        step = _curves.x_value(event)
        if step is None:  # no step: one past the previous point
            step = self._x[-1] + 1 if self._x else 1.0
        self._x.append(step)
        self._rows.append({key: _curves.kept_value(event.get(key)) for key in self.keys})

    def redraw(self) -> None:
        """Draw every event seen so far, and show it: in the notebook cell, in ``save``."""
        columns = _curves.columns_of(self._rows, self.keys)
        if self._owned_ax:
            _drawing.draw(self._ax, self._x, columns, xlabel="epoch", title=self.title)
        else:  # the caller's Axes: replace only our own curves, keep what else it shows
            for line in self._lines:
                line.remove()
            before = set(self._ax.get_lines())
            _drawing.draw(self._ax, self._x, columns, xlabel="epoch", title=self.title, clear=False)
            self._lines = [line for line in self._ax.get_lines() if line not in before]
        self._drawn = len(self._x)
        if self.save is not None:
            self._figure.savefig(self.save)
        display = _notebook_display()
        if display is not None:
            buffer = io.BytesIO()
            self._figure.savefig(buffer, format="png")
            image = display.Image(data=buffer.getvalue(), format="png")
            if self._handle is None:
                self._handle = display.display(image, display_id=True)
            else:
                self._handle.update(image)

    def refresh(self) -> None:
        """Redraw now, whatever ``min_interval`` says (the name fitstream 0.4 used)."""
        self.redraw()

    def close(self) -> None:
        """Close every stream this plot still follows; each one draws its last events first."""
        for stream in list(self._open):
            stream.close()

    def __enter__(self) -> LivePlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@overload
def live_plot(
    events: Iterable[dict[str, Any]],
    /,
    *keys: str,
    min_interval: float = 1.0,
    save: str | os.PathLike[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    title: str | None = None,
    ax: Axes | None = None,
) -> Iterator[dict[str, Any]]: ...


@overload
def live_plot(
    *keys: str,
    min_interval: float = 1.0,
    save: str | os.PathLike[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    title: str | None = None,
    ax: Axes | None = None,
) -> LivePlot: ...


def live_plot(*args: Any, **kwargs: Any) -> LivePlot | Iterator[dict[str, Any]]:  # noqa: D417
    """Plot ``keys`` against ``step`` while events flow, redrawing at most every few seconds.

    The result is both a stage and a context manager::

        with live_plot("train_loss", "val_loss") as lp:
            for event in lp(events):
                ...

        history = collect(pipe(events, live_plot("train_loss"), take(100)))

    The first event is drawn at once; after that the plot is redrawn when an event arrives
    at least ``min_interval`` seconds after the previous redraw, and once more when the
    stream ends (exhausted, closed early, or raising, Ctrl-C included) so the final figure
    holds every event. Like :func:`plot_history`, a missing or non-finite value leaves a
    gap; an event without ``step`` is put one past the previous point. A key that no event
    has is listed in the legend as ``key (no values)`` rather than stopping the training.

    Where it shows:

    * In Jupyter (an IPython kernel is running) the plot is one output of the running cell,
      updated in place through an IPython display handle.
    * With ``save=``, every redraw also writes the figure to that file (missing folders are
      created), so a script's plot can be watched in an image viewer.
    * Otherwise nothing is shown; the figure is kept up to date in ``.figure``.

    The figure is built without pyplot, so it never opens a window or doubles in a notebook.

    Args:
        *keys: The event names to plot, one curve each. ``live_plot(events, *keys)`` applies
            the stage at once and returns the stream.
        min_interval: Least number of seconds between two redraws while events arrive
            (``0`` redraws at every event). A redraw in a notebook renders a PNG, on the
            order of 0.1 s: small next to a real epoch, not next to a tiny one.
        save: A file that every redraw writes (PNG unless the suffix says otherwise).
        figsize: ``(width, height)`` in inches; ``(6.4, 4.0)`` when ``None``.
        dpi: Pixels per inch.
        title: A title for the plot.
        ax: Draw into this existing matplotlib Axes (one panel of a grid, say) instead of
            a new figure; each redraw replaces only the curves of this plot and keeps what
            else the Axes shows. ``figsize`` and ``dpi`` are then the Axes' figure's.

    Returns:
        A :class:`LivePlot` (stage and context manager), or the stream when one is given.

    Raises:
        TypeError: A key or the title is not a string, or ``ax`` is not a matplotlib Axes.
        ValueError: No key, ``min_interval`` below 0, a bad ``figsize``/``dpi``, or
            ``figsize`` together with ``ax``.
        IsADirectoryError: ``save`` is a folder.
        NotADirectoryError: ``save`` lies under a file.
        PermissionError: ``save`` cannot be written.
        ImportError: matplotlib is not installed (``pip install 'fitstream[plot]'``).

    Example:
        >>> from fitstream import pipe
        >>> events = [{"step": i, "loss": 1 / i} for i in range(1, 4)]
        >>> lp = live_plot("loss", min_interval=0)
        >>> [ev["step"] for ev in pipe(events, lp)]
        [1, 2, 3]
        >>> lp.figure.axes[0].get_lines()[0].get_ydata().tolist()
        [1.0, 0.5, 0.3333333333333333]
    """
    if args and is_stream(args[0]):
        events, *keys = args
        return LivePlot(*keys, **kwargs)(events)
    return LivePlot(*args, **kwargs)
