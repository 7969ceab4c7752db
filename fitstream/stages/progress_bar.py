"""A live progress bar over a stream of events: :func:`progress`.

The bar is drawn by `tqdm <https://tqdm.github.io/>`_ (optional extra ``fitstream[progress]``),
which picks its notebook widget inside Jupyter and a text bar elsewhere.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .._internal.checks import check_positive_int, check_strings
from .._internal.hints import expected_length
from .._internal.lookup import unseen_keys_error
from .._internal.optional import require
from .._internal.paths import check_open_for_writing
from ..events import Stage
from ..pipeline import stage_factory, upstream
from ._progress_layout import Layout, columns, width
from ._progress_layout import bar_class as make_bar_class
from ._progress_values import bar_values, fit, needed

__all__ = ["progress"]


class _Unseen:
    """Warns once about keys of the bar that no event has had, after a few events or at the end.

    A key computed only every few epochs is seen by the ``WARN_AFTER``-th event at the latest
    in any usual setting; one never seen by then is a typo, usually.
    """

    WARN_AFTER = 10

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys, self.seen, self.count, self.done = keys, set[str](), 0, not keys

    def see(self, event: dict[str, Any]) -> None:
        if self.done:
            return
        self.count += 1
        self.seen.update(event)
        if self.count >= self.WARN_AFTER:
            self.warn()

    def warn(self) -> None:
        if self.done:
            return
        self.done = True
        error = unseen_keys_error("progress", "keys", self.keys, self.seen, self.count)
        if error is not None:
            message = f"{error.args[0]}; the bar does not show it (a misspelled key?)"
            warnings.warn(message, UserWarning, stacklevel=3)


@stage_factory
def progress(
    *keys: str,
    total: int | None = None,
    disable: bool | None = None,
    desc: str | None = None,
    file: IO[str] | None = None,
) -> Stage:
    """Show a live progress bar while events pass through unchanged.

    The bar counts epochs (events), the time per epoch, and after them the latest value of
    each of ``keys``: ``12 epochs [00:03, 251ms/epoch, train_loss=0.4127, val_loss=0.5013]``.
    With a total (``total=``, or the ``n`` of a :func:`fitstream.take` before it in a
    :func:`fitstream.pipe`) it also shows a bar, ``12/100`` and the time left; a stream
    that ends before its total says so: ``37/100 epochs (ended early)`` (e.g. after
    :func:`fitstream.early_stop`), or ``(stopped early)`` when the consumer stopped it.
    Values are shown with four significant digits. For an ensemble's per-member values (lists
    of K numbers) the bar shows the best member still training:
    ``val_loss=0.3127 (best: lr=0.01)``, the smallest for a loss or an error and the largest for
    an accuracy or a score (the :ref:`direction rule <direction-rule>`), followed by a stopped
    member that did better (``; lr=0.1 stopped at 0.2904``), and how many members still train
    once some have stopped. A per-member key whose name tells no direction (``lr``) shows its
    range, ``lr=0.001..0.1``. A key keeps the last value it had, so a metric computed every few
    epochs stays on the bar in between; a value that is not a number (a string, a tensor with
    several elements) is not shown. A key that none of the first 10 events had (or none of the
    stream's, when it is shorter) is warned about once, with the keys the events had: a
    misspelled ``progress("val_los")`` would otherwise stay silent for the whole run. A text
    bar written to a file (not a terminal) is 80 columns wide.

    Members that carry a ``fold`` (a grid judged by cross-validation) show the best setting's
    mean over its folds instead of the best single member:
    ``val_acc=0.9612 (best: lr=0.01, 5 folds)``. Every named key always shows, whole and in the
    order given: what follows a value is shortened first (to its leading items, then away),
    then the bar and the times give up their columns (``12/50 epochs [251ms/epoch, ...]``),
    and a line written to a file grows past 80 columns rather than cut a value.

    The bar is created when the first event is requested (so the rate counts the first epoch)
    and is closed on every exit path: the stream ends, the consumer stops early (``break``,
    :func:`fitstream.take`, ``close()``), or the source raises, Ctrl-C included.

    In Jupyter the bar is tqdm's notebook widget (when ``ipywidgets`` is installed) unless
    ``file`` is given. Elsewhere it is a text bar written to ``file``; with ``disable=None``
    (tqdm's convention) nothing at all is written when ``file`` is not a terminal, so logs of
    batch jobs stay clean. (A notebook without ``ipywidgets`` gets the text bar, and its
    output may not count as a terminal: pass ``disable=False`` there.)

    Args:
        *keys: Names of event values to show after the count.
        total: The expected number of epochs, to show a percentage and a time estimate;
            ``None`` takes it from the stream when it tells (a ``take(n)`` upstream, a list).
        disable: ``True`` hides the bar, ``False`` always shows it, ``None`` shows it only on
            a terminal (or in a notebook).
        desc: A label written before the bar, e.g. ``"fold 2"``.
        file: Where the text bar is written; ``sys.stderr`` when ``None``. Giving a file also
            selects the text bar inside a notebook.

    Returns:
        A stage for :func:`fitstream.pipe`; ``progress(events, *keys, ...)`` returns the stream.

    Warns:
        UserWarning: A key none of the first 10 events had (or none of a shorter stream's).

    Raises:
        TypeError: A key is not a string, ``total`` is not an int, ``disable`` is not a bool or
            ``None``, ``desc`` is not a string, or ``file`` has no ``write`` method.
        ValueError: ``total`` is below 1, or ``file`` is closed or not open for writing.
        ImportError: tqdm is not installed (``pip install 'fitstream[progress]'``).

    Example:
        >>> import io
        >>> events = [{"step": i, "train_loss": 1 / i} for i in range(1, 4)]
        >>> out = io.StringIO()  # not a terminal: with disable=None nothing is written
        >>> [ev["step"] for ev in progress(events, "train_loss", total=3, file=out)]
        [1, 2, 3]
        >>> out.getvalue()
        ''
    """
    check_strings(keys, func="progress", arg="keys")
    check_positive_int(total, func="progress", arg="total", allow_none=True)
    if disable is not None and not isinstance(disable, bool):
        raise TypeError(
            f"progress: disable must be True, False or None, "
            f"got {type(disable).__name__}: {disable!r:.60}"
        )
    if desc is not None and not isinstance(desc, str):
        raise TypeError(
            f"progress: desc must be a string or None, got {type(desc).__name__}: {desc!r:.60}"
        )
    if file is not None and not callable(getattr(file, "write", None)):
        raise TypeError(
            f"progress: file must be a writable text stream such as sys.stderr, "
            f"got {type(file).__name__}: {file!r:.60}"
        )
    if file is not None:
        check_open_for_writing(file, func="progress", arg="file")
    if file is None:
        bar_class: Any = make_bar_class(require("tqdm.auto", "progress", feature="progress").tqdm)
    else:
        bar_class = make_bar_class(require("tqdm", "progress", feature="progress").tqdm)
    out = sys.stderr if file is None else file

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        expected = total if total is not None else expected_length(events)
        latest: dict[str, str] = {}
        notes: dict[str, str] = {}
        unseen = _Unseen(() if disable else keys)  # a hidden bar shows nothing to miss
        shape = width(out)
        layout = Layout(expected, desc, columns(out), can_widen="ncols" in shape)
        with upstream(events) as it:
            bar = bar_class(
                total=expected,
                disable=disable,
                desc=desc,
                unit="epoch",
                file=out,
                bar_format=layout.format(0),
                **shape,
            )
            ended = "stopped"  # closed by the consumer (break, take) or an exception
            try:
                for event in it:
                    unseen.see(event)
                    values, told = bar_values(event, keys)
                    latest.update(values)
                    notes.update((k, told.get(k, "")) for k in values)
                    if expected is None:
                        bar.bar_format = layout.format(bar.n + 1)
                    if latest:
                        space = layout.room_for(bar, needed(latest, keys))
                        bar.set_postfix_str(fit(latest, notes, keys, space), refresh=False)
                    bar.update(1)
                    yield event
                ended = "ended"
                unseen.warn()
            except GeneratorExit:  # stopped by the consumer: the keys it never had still count
                unseen.warn()
                raise
            finally:
                if expected is not None and bar.n < expected:
                    # e.g. early_stop ended the run before take(n)'s n: say so on the bar.
                    layout.end(bar, f"({ended} early)")
                bar.close()

    return stage
