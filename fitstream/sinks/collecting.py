"""Sinks: consume a stream of events into a list, a JSON Lines file, or a DataFrame.

Every sink keeps one record per event. By default a record is the event without its key
``model`` (whatever it holds) and its live objects (a model, an optimizer, a Lightning
``Trainer``: anything :func:`fitstream._internal.values.is_live_object` recognises);
``exclude`` drops more keys, or
``include`` names exactly the keys to keep. 0-d tensors and NumPy scalars become Python numbers.
Arguments are checked before the first event is pulled, and the stream is closed when the sink
returns or fails.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._internal.optional import require
from .._internal.paths import check_file_target, check_open_for_writing
from ..pipeline import check_stream, upstream
from ._json import file_watch, json_line
from ._members import rows_by_member
from ._records import check_selection, records

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["collect", "collect_jsonl", "collect_pd"]


def collect(
    events: Iterable[dict[str, Any]],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Consume ``events`` and return one record (a new dict) per event.

    Values are kept as they are, except that 0-d tensors and NumPy scalars become Python
    numbers and larger tensors that require grad are detached copies, also inside lists and
    dicts (so a history holds no autograd graph), and that ``model`` and live objects are left
    out. An ensemble's per-member values stay lists of K numbers, one record per event (see
    :func:`collect_pd` for one row per member).

    Args:
        events: The stream to consume, e.g. ``islice(epoch_stream(...), 100)``.
        include: The keys to keep, in this order. A record leaves out a key its event lacks
            (e.g. ``val_loss`` in an epoch without validation); a key that no event had raises
            KeyError listing the keys the events had, once the stream ends. A live object
            named here is kept.
        exclude: Keys to leave out besides the live objects (absent keys are ignored).

    Returns:
        The records, in stream order.

    Raises:
        ValueError: If both ``include`` and ``exclude`` are given, or ``include`` is empty.
        TypeError: If ``events`` is not a stream or ``include``/``exclude`` is not a list of
            key names.
        KeyError: If no event had a key named in ``include``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1)
        >>> events = [
        ...     {"step": 1, "model": model, "train_loss": torch.tensor(0.5), "lr": 0.1},
        ...     {"step": 2, "model": model, "train_loss": torch.tensor(0.25), "lr": 0.1},
        ... ]
        >>> collect(events)  # doctest: +NORMALIZE_WHITESPACE
        [{'step': 1, 'train_loss': 0.5, 'lr': 0.1},
         {'step': 2, 'train_loss': 0.25, 'lr': 0.1}]
        >>> collect(events, include=["step", "train_loss"])
        [{'step': 1, 'train_loss': 0.5}, {'step': 2, 'train_loss': 0.25}]
        >>> collect(events, exclude=["lr"])
        [{'step': 1, 'train_loss': 0.5}, {'step': 2, 'train_loss': 0.25}]
    """
    check_stream(events, func="collect")
    selection = check_selection(include, exclude, caller="collect")
    with upstream(events) as it:
        return list(records(it, selection, caller="collect"))


def _check_target(dest: object) -> Path | None:
    """The path to write, checked; ``None`` for an open text file (checked too)."""
    if isinstance(dest, str | os.PathLike):
        path = Path(dest)
        check_file_target(path, func="collect_jsonl", arg="dest")
        return path
    _open_target(dest)
    return None


def _continued(path: Path, first: Mapping[str, Any] | None) -> IO[str]:
    """Open ``path`` for the stream whose first event is ``first``; keep what came before.

    A stream whose first step is ``s > 1`` continues a run (``resumable`` numbers its steps on
    from the checkpoint): the lines of steps before ``s`` stay, those from ``s`` on (written by
    the run that was killed after its last checkpoint) go. Any other stream starts the file
    afresh. The kept lines are written to a temporary file renamed over ``path``, so the
    record is whole at every moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    start = _step_of(first) if first is not None else None
    if start is None or start <= 1 or not path.exists():
        return path.open("w", encoding="utf-8")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if (_step_of_line(line) or start) < start]
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.writelines(kept)
    os.replace(temporary, path)
    return path.open("a", encoding="utf-8")


def _step_of(record: Mapping[str, Any]) -> int | None:
    """A record's ``step`` when it is an int, else None."""
    step = record.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _step_of_line(line: str) -> int | None:
    """The ``step`` of one JSON line, or None (a line cut by a crash, a record without one)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return _step_of(record) if isinstance(record, dict) else None


def _open_target(dest: object) -> tuple[IO[str], bool]:
    """Return ``(file, opened_here)`` for an open text file; check it is writable."""
    if not callable(getattr(dest, "write", None)):
        raise TypeError(
            "collect_jsonl: dest must be a path (str or os.PathLike) or a file opened for "
            f"writing text, got {type(dest).__name__}: {dest!r:.80}"
        )
    binary = isinstance(dest, io.BufferedIOBase | io.RawIOBase) or "b" in str(
        getattr(dest, "mode", "")
    )
    if binary:
        raise TypeError(
            f"collect_jsonl: dest must be opened in text mode ('w' or 'a'), got the binary "
            f"file {dest!r:.80}"
        )
    check_open_for_writing(dest, func="collect_jsonl", arg="dest")
    return dest, False  # type: ignore[return-value]


def collect_jsonl(
    events: Iterable[dict[str, Any]],
    dest: str | os.PathLike[str] | IO[str],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> None:
    """Consume ``events``, writing each record as one line of JSON as soon as it arrives.

    Each line is written and flushed before the next event is pulled, so a run that crashes
    loses at most the event being written, and the file can be followed while training runs.
    Values become JSON data: 0-d tensors and NumPy scalars are written as numbers, larger
    tensors and arrays as lists. Every line is strict JSON (``JSON.parse``, ``jq``, any JSON
    library reads it): NaN and infinities, which JSON has no numbers for, are written as the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, and :func:`fitstream.plot_history`
    reads them back as those floats. A value that is none of these raises a TypeError naming
    its key and type; the lines already written stay. An ensemble's per-member values are
    written as lists of K numbers, one line per event.

    A file opened here that is deleted (or replaced) while the run goes on is noticed at the
    next write, which raises a FileNotFoundError instead of writing into a file no one can
    read; a handle passed in is checked the same way when it is a file on disk.

    Args:
        events: The stream to consume.
        dest: A path (missing parent folders are created, an existing file is overwritten) or
            a file opened for writing text. A file opened here is closed on every exit path; a
            file passed in is flushed and left open. A stream that continues a run (its
            first step is ``s > 1``, as :func:`~fitstream.resumable` numbers it after a
            restart) keeps an existing file's lines of the steps before ``s`` and drops the
            others (what the killed run wrote after its last checkpoint): one script for the
            first start and every restart leaves one record, every step once.
        include: The keys to keep, in this order (see :func:`collect`).
        exclude: Keys to leave out besides the live objects.

    Raises:
        ValueError: If both ``include`` and ``exclude`` are given, ``include`` is empty, or
            ``dest`` is a closed file or one not open for writing.
        TypeError: If ``dest`` is neither a path nor a text file, or a value cannot be written.
        IsADirectoryError, NotADirectoryError, PermissionError: If ``dest`` is a folder, lies
            under a file, or cannot be written (at the call, before any event is pulled).
        FileNotFoundError: While writing, if the file was deleted since it was opened.
        KeyError: If no event had a key named in ``include``.

    Example:
        >>> import io, torch
        >>> buffer = io.StringIO()
        >>> events = [
        ...     {"step": 1, "train_loss": torch.tensor(0.5)},
        ...     {"step": 2, "train_loss": 0.25},
        ... ]
        >>> collect_jsonl(events, buffer)
        >>> print(buffer.getvalue(), end="")
        {"step": 1, "train_loss": 0.5}
        {"step": 2, "train_loss": 0.25}
    """
    check_stream(events, func="collect_jsonl")
    selection = check_selection(include, exclude, caller="collect_jsonl")
    path = _check_target(dest)
    handle: IO[str] | None = None
    if path is None:
        handle = _open_target(dest)[0]
    elif not path.exists():  # nothing to keep: made at once, to follow from the start
        handle = _continued(path, None)
    try:
        with upstream(events) as it:
            for position, record in enumerate(records(it, selection, caller="collect_jsonl")):
                if handle is None:  # a path: opened at the first event, which says where
                    assert path is not None
                    handle = _continued(path, record)
                if position == 0:
                    still_there = file_watch(handle)
                line = json_line(record, caller="collect_jsonl")
                still_there()
                handle.write(line)
                handle.flush()
        if handle is None and path is not None:  # no event: an empty record, as before
            handle = _continued(path, None)
    finally:
        if handle is not None:
            if path is not None:
                handle.close()
            else:
                handle.flush()


def collect_pd(
    events: Iterable[dict[str, Any]],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Consume ``events`` into a pandas DataFrame with one row per event.

    The rows are the records :func:`collect` would return, so tensors of one element arrive
    as numbers and columns get numeric dtypes. Keys missing from some events give missing
    values (NaN) in those rows. Needs the optional dependency pandas (``fitstream[pandas]``),
    imported only when this function is called.

    An ensemble's event (``event["model"]`` an ensemble, as :func:`fitstream.ensemble_stream`
    gives) becomes one row per member: ``step``, a ``member`` column (0 to K-1), the member's
    hyperparameters (``ensemble.hparams[k]``: ``optimizer``, ``lr``, ...; an event key of the
    same name wins), and each per-member list's entry for that member; values shared by the
    members (``train_time_sec``, a list of another length) repeat in each of its rows. An
    ``active`` column says whether the member trained in that epoch: a member frozen by
    :func:`fitstream.early_stop` keeps rows to the end (with its kept weights' values), so
    ``frame[frame.active].groupby("member").step.max()`` is the epoch each one stopped at. The
    hyperparameters are read at each event, before the model is left out. ``include`` may
    name ``member``, ``active`` and the hyperparameters. The records :func:`collect` kept of
    an ensemble's events (their per-member lists and ``hparams``) are spread the same way, so
    ``collect_pd(collect(ensemble_stream(...)))`` is the same frame, which
    :func:`~fitstream.summarize` and :func:`~fitstream.plot_history` read.

    Args:
        events: The stream to consume.
        include: The columns to keep, in this order (see :func:`collect`).
        exclude: Keys to leave out besides the live objects.

    Returns:
        The DataFrame; with ``include``, its columns are exactly ``include`` even for an
        empty stream.

    Raises:
        ImportError: If pandas is not installed (checked before any event is pulled).
        ValueError: If both ``include`` and ``exclude`` are given, or ``include`` is empty, or
            an ensemble's event already has a key ``member``.
        KeyError: If no event had a key named in ``include``.

    Example:
        >>> events = [{"step": 1, "train_loss": 0.5}, {"step": 2, "train_loss": 0.25}]
        >>> df = collect_pd(events)
        >>> df
           step  train_loss
        0     1        0.50
        1     2        0.25
        >>> list(collect_pd([], include=["step", "val_loss"]).columns)
        ['step', 'val_loss']
    """
    check_stream(events, func="collect_pd")
    selection = check_selection(include, exclude, caller="collect_pd")
    pandas = require("pandas", "pandas", feature="collect_pd")
    with upstream(events) as it:
        spread = rows_by_member(it, caller="collect_pd")
        rows = list(records(spread, selection, caller="collect_pd"))
    columns = list(selection[0]) if selection[0] is not None else None
    frame: pd.DataFrame = pandas.DataFrame(rows, columns=columns)
    return frame
