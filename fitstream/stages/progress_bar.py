"""A live progress bar over a stream of events: :func:`progress`.

The bar is drawn by `tqdm <https://tqdm.github.io/>`_ (optional extra ``fitstream[progress]``),
which picks its notebook widget inside Jupyter and a text bar elsewhere.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .._internal.checks import check_positive_int, check_strings
from .._internal.optional import require
from .._internal.values import scalar_value
from ..events import Stage
from ..pipeline import stage_factory, upstream

__all__ = ["progress"]


def _compact(value: int | float | bool) -> str:
    """Format a number briefly: ints and bools as they are, floats with 4 significant digits.

    Example:
        >>> _compact(3), _compact(0.123456), _compact(12345.678), _compact(float("nan"))
        ('3', '0.1235', '1.235e+04', 'nan')
    """
    if isinstance(value, bool | int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


@stage_factory
def progress(
    *keys: str,
    total: int | None = None,
    disable: bool | None = None,
    desc: str | None = None,
    file: IO[str] | None = None,
) -> Stage:
    """Show a live progress bar while events pass through unchanged.

    The bar counts epochs (events), shows epochs per second, and after the count the latest
    value of each of ``keys``, e.g. ``12/100 [00:03, 3.9epoch/s, train_loss=0.4127,
    val_loss=0.5013]``. Numbers, 0-d tensors and NumPy scalars are shown with four significant
    digits. A key keeps the last value it had, so a metric computed every few epochs stays on
    the bar in between; a key no event has carried yet, or whose value is not a number (a
    string, a tensor with several elements), is simply not shown: a missing key is never an
    error here.

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
        total: The expected number of epochs, to show a percentage and a time estimate.
        disable: ``True`` hides the bar, ``False`` always shows it, ``None`` shows it only on
            a terminal (or in a notebook).
        desc: A label written before the bar, e.g. ``"fold 2"``.
        file: Where the text bar is written; ``sys.stderr`` when ``None``. Giving a file also
            selects the text bar inside a notebook.

    Returns:
        A stage for :func:`fitstream.pipe`; ``progress(events, *keys, ...)`` returns the stream.

    Raises:
        TypeError: A key is not a string, ``total`` is not an int, ``disable`` is not a bool or
            ``None``, ``desc`` is not a string, or ``file`` has no ``write`` method.
        ValueError: ``total`` is below 1.
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
    if file is None:
        bar_class: Any = require("tqdm.auto", "progress", feature="progress").tqdm
    else:
        bar_class = require("tqdm", "progress", feature="progress").tqdm

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        latest: dict[str, str] = {}
        with upstream(events) as it:
            bar = bar_class(
                total=total,
                disable=disable,
                desc=desc,
                unit="epoch",
                file=sys.stderr if file is None else file,
                dynamic_ncols=True,
            )
            try:
                for event in it:
                    for key in keys:
                        number = scalar_value(event.get(key))
                        if number is not None:
                            latest[key] = _compact(number)
                    if latest:
                        shown = ", ".join(f"{k}={latest[k]}" for k in keys if k in latest)
                        bar.set_postfix_str(shown, refresh=False)
                    bar.update(1)
                    yield event
            finally:
                bar.close()

    return stage
