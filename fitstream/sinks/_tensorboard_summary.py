"""The HParams sessions :func:`fitstream.log_tensorboard` writes, and the checks of ``hparams``.

A run with hyperparameters gets a *session*: a session-start summary (the hyperparameters)
when its first event is logged and a session-end summary (the status) when the stream ends,
in the run's own folder. No experiment summary is written: TensorBoard then builds the
HParams table from all sessions under ``--logdir`` (so runs with different hyperparameter
names still show every name, a run that lacks one shows it empty) and takes the metrics from
the curves in each session's sub-runs: the last value of ``train``'s ``epoch/loss``, of
``validation``'s ``epoch/loss_best`` and so on.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .._internal.values import scalar_value

__all__ = ["check_hparams", "plain_hparams", "write_session_end", "write_session_start"]

HParams = dict[str, bool | int | float | str]


def check_hparams(hparams: object, *, caller: str) -> HParams | None:
    """Check ``hparams`` and return it as a plain dict (``None`` values left out).

    Values must be numbers (0-d tensors and NumPy scalars are converted), strings or bools.

    Example:
        >>> check_hparams({"lr": 0.01, "layers": 2, "optimizer": "adam"}, caller="demo")
        {'lr': 0.01, 'layers': 2, 'optimizer': 'adam'}
        >>> check_hparams({"sizes": [64, 64]}, caller="demo")
        Traceback (most recent call last):
        ...
        TypeError: demo: hparams['sizes'] must be a number, str, bool or None, got list: [64, 64]...
    """
    if hparams is None:
        return None
    if not isinstance(hparams, Mapping):
        raise TypeError(
            f"{caller}: hparams must be a dict of hyperparameter names to values, got "
            f"{type(hparams).__name__}: {hparams!r:.80}"
        )
    checked: HParams = {}
    for name, value in hparams.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{caller}: hparams keys must be non-empty str, got {name!r:.80}")
        if value is None:
            continue
        plain = value if isinstance(value, str) else scalar_value(value)
        if plain is None:
            raise TypeError(
                f"{caller}: hparams[{name!r}] must be a number, str, bool or None, got "
                f"{type(value).__name__}: {value!r:.80} (pass str(value) to record it as text)"
            )
        checked[name] = plain
    return checked


def plain_hparams(hparams: Mapping[str, Any]) -> HParams:
    """Return an ensemble member's hyperparameters as HParams values, never refusing one.

    Numbers, strings and bools are kept; ``None`` is left out; anything else (Adam's
    ``betas`` tuple) is recorded as its text.

    Example:
        >>> plain_hparams({"lr": 0.01, "betas": (0.9, 0.999), "optimizer": "Adam", "x": None})
        {'lr': 0.01, 'betas': '(0.9, 0.999)', 'optimizer': 'Adam'}
    """
    plain: HParams = {}
    for name, value in hparams.items():
        if value is None:
            continue
        number = None if isinstance(value, str) else scalar_value(value)
        plain[str(name)] = (
            value if isinstance(value, str) else (number if number is not None else str(value))
        )
    return plain


def whole_numbers(sessions: Sequence[HParams], *, numbers: Collection[str] = ()) -> list[HParams]:
    """The sessions' hyperparameters, a column of whole numbers written as text.

    The HParams table prints every number with decimals (members 0 to 19 as ``0.0000`` to
    ``19.000``). A column whose value is an int in every session (``member``, ``fold``, a
    width) is written as its text, which the table prints as given; a column that mixes ints
    and floats (``weight_decay`` 0 and 1e-4) stays numbers, as do the names in ``numbers``
    (an optimizer's settings: real-valued, however they were written).

    Example:
        >>> whole_numbers([{"member": 0, "wd": 0, "lr": 0.1}, {"member": 1, "wd": 1e-4, "lr": 1}])
        [{'member': '0', 'wd': 0, 'lr': 0.1}, {'member': '1', 'wd': 0.0001, 'lr': 1}]
    """
    names = {name for session in sessions for name in session}
    whole = {
        name
        for name in names
        if name not in numbers
        and all(
            isinstance(session[name], int) and not isinstance(session[name], bool)
            for session in sessions
            if name in session
        )
    }
    return [
        {name: str(value) if name in whole else value for name, value in session.items()}
        for session in sessions
    ]


def _write(writer: Any, tag: str, content: Any, step: int) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams.metadata import create_summary_metadata

    summary = Summary(value=[Summary.Value(tag=tag, metadata=create_summary_metadata(content))])
    writer._get_file_writer().add_summary(summary, step)


def write_session_start(writer: Any, hparams: HParams, step: int) -> None:
    """Write the session start with ``hparams`` into ``writer``'s run."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, str):
            start.hparams[name].string_value = value
        else:
            start.hparams[name].number_value = value
    content = plugin_data_pb2.HParamsPluginData(session_start_info=start, version=0)
    _write(writer, metadata.SESSION_START_INFO_TAG, content, step)


def write_session_end(writer: Any, *, failed: bool, step: int) -> None:
    """Write the session end, its status a success or (``failed``) a failure."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    content = plugin_data_pb2.HParamsPluginData(session_end_info=end, version=0)
    _write(writer, metadata.SESSION_END_INFO_TAG, content, step)
