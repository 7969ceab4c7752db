"""A live progress bar over a stream of events: :func:`progress`.

The bar is drawn by `tqdm <https://tqdm.github.io/>`_ (optional extra ``fitstream[progress]``),
which picks its notebook widget inside Jupyter and a text bar elsewhere.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from .._internal.checks import check_positive_int, check_strings
from .._internal.direction import infer_mode
from .._internal.hints import expected_length
from .._internal.lookup import unseen_keys_error
from .._internal.members import ensemble_of, is_per_member, member_labels
from .._internal.optional import require
from .._internal.paths import check_open_for_writing
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


def _bar_format(total: int | None, desc: str | None, *, count: int, note: str = "") -> str:
    """The bar's layout.

    ``|###  | 12/100 epochs`` and the time left when the total is known, ``12 epochs``
    otherwise; then the time so far, seconds per epoch and the values. ``note`` follows the
    count (``ended early``), where a line cut at 80 columns still shows it.
    """
    label = "{desc}: " if desc else ""
    note = f" {note}" if note else ""
    if total is not None:
        count_part = "|{bar}| {n_fmt}/{total_fmt} epochs" + note
        left = "" if note else "<{remaining}"  # nothing is left of a stream that ended
        return label + count_part + " [{elapsed}" + left + ", {per_epoch}{postfix}]"
    unit = "epoch" if count == 1 else "epochs"
    return label + "{n_fmt} " + unit + note + " [{elapsed}, {per_epoch}{postfix}]"


def _per_epoch(seconds: float) -> str:
    """Seconds per epoch in 3 significant digits, milliseconds below a second.

    Example:
        >>> _per_epoch(12.345), _per_epoch(0.51234), _per_epoch(0.0000456)
        ('12.3s/epoch', '512ms/epoch', '0.0456ms/epoch')
    """
    if seconds >= 1:
        return f"{seconds:.3g}s/epoch"
    return f"{seconds * 1000:.3g}ms/epoch"


def _bar_class(base: Any) -> Any:
    """``base`` (a tqdm class) whose format also knows ``{per_epoch}``, e.g. ``512ms/epoch``.

    Its ``monitor_interval`` is 0: tqdm's monitor thread (started by the first bar, alive for
    good, to shorten the refresh of stalled bars) is never started by ours, since an epoch bar
    is refreshed at each epoch anyway and nothing we start may outlive its stream.
    """

    def format_dict(self: Any) -> dict[str, Any]:
        values: dict[str, Any] = base.format_dict.fget(self)
        n, elapsed = values.get("n", 0), values.get("elapsed", 0.0)
        values["per_epoch"] = _per_epoch(elapsed / n) if n else "?s/epoch"
        return values

    return type("EpochBar", (base,), {"format_dict": property(format_dict), "monitor_interval": 0})


def _width(file: IO[str]) -> dict[str, Any]:
    """A terminal's bar follows its width; elsewhere (a log file) the line is 80 columns."""
    isatty = getattr(file, "isatty", None)
    if callable(isatty) and isatty():
        try:
            os.get_terminal_size(file.fileno())
            return {"dynamic_ncols": True}
        except (AttributeError, OSError, ValueError):  # no size to follow
            pass
    return {"ncols": 80}


_ACTIVE = "\0active"  # the postfix entry of an ensemble's still-training members


def _joined(latest: dict[str, str], keys: tuple[str, ...]) -> str:
    return ", ".join(latest[k] for k in (*keys, _ACTIVE) if k in latest)


def _member_text(key: str, values: list[float], active: Sequence[bool], names: list[str]) -> str:
    """How the bar shows a per-member value: the best member still training, or the spread.

    The best is the smallest for a key the direction rule reads as a loss, the largest for an
    accuracy or a score; a key that tells neither shows its range instead of a guessed best.
    A stopped member that did better than every training one is named after it.

    Example:
        >>> _member_text("val_loss", [0.5, 0.2, 0.4], [True, False, True], ["a", "b", "c"])
        'val_loss=0.4 (best: c; b stopped at 0.2)'
        >>> _member_text("val_acc", [0.5, 0.9], [True, True], ["a", "b"])
        'val_acc=0.9 (best: b)'
        >>> _member_text("lr", [0.1, 0.01], [True, True], ["a", "b"])
        'lr=0.01..0.1'
    """
    finite = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        return f"{key}=nan"
    mode = infer_mode(key)
    if mode is None:
        low, high = min(values[i] for i in finite), max(values[i] for i in finite)
        return f"{key}={_compact(low)}..{_compact(high)}"
    pick = min if mode == "min" else max

    def which(i: int) -> str:
        return names[i] if i < len(names) else f"member {i}"

    best = pick(finite, key=lambda i: values[i])
    training = [i for i in finite if i >= len(active) or active[i]]
    if not training:  # every member with a number has stopped
        return f"{key}={_compact(values[best])} (best: {which(best)}, stopped)"
    leader = pick(training, key=lambda i: values[i])
    text = f"{key}={_compact(values[leader])} (best: {which(leader)}"
    if values[best] != values[leader]:
        text += f"; {which(best)} stopped at {_compact(values[best])}"
    return text + ")"


def _shown(event: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """The text of each key the event has a number for; for K members, the best of them."""
    shown: dict[str, str] = {}
    ensemble = ensemble_of(event)
    names: list[str] | None = None
    for key in keys:
        value = event.get(key)
        if isinstance(value, list) and is_per_member(value):
            if names is None:
                hparams = [] if ensemble is None else list(ensemble.hparams)
                fallback = lambda k: f"member {k}"  # noqa: E731
                names = member_labels(hparams, fallback) if hparams else []
            active = () if ensemble is None else ensemble.active
            shown[key] = _member_text(key, [float(v) for v in value], active, names)
            continue
        number = scalar_value(value)
        if number is not None:
            shown[key] = f"{key}={_compact(number)}"
    if ensemble is not None and not all(ensemble.active):
        shown[_ACTIVE] = f"{sum(map(bool, ensemble.active))}/{len(ensemble)} training"
    return shown


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
        bar_class: Any = _bar_class(require("tqdm.auto", "progress", feature="progress").tqdm)
    else:
        bar_class = _bar_class(require("tqdm", "progress", feature="progress").tqdm)
    out = sys.stderr if file is None else file

    def stage(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        expected = total if total is not None else expected_length(events)
        latest: dict[str, str] = {}
        unseen = _Unseen(() if disable else keys)  # a hidden bar shows nothing to miss
        with upstream(events) as it:
            bar = bar_class(
                total=expected,
                disable=disable,
                desc=desc,
                unit="epoch",
                file=out,
                bar_format=_bar_format(expected, desc, count=0),
                **_width(out),
            )
            ended = "stopped"  # closed by the consumer (break, take) or an exception
            try:
                for event in it:
                    unseen.see(event)
                    latest.update(_shown(event, keys))
                    if latest:
                        bar.set_postfix_str(_joined(latest, keys), refresh=False)
                    if expected is None:
                        bar.bar_format = _bar_format(None, desc, count=bar.n + 1)
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
                    note = f"({ended} early)"
                    bar.bar_format = _bar_format(expected, desc, count=bar.n, note=note)
                bar.close()

    return stage
