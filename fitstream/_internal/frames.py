"""collect_pd's tidy frame of an ensemble read back as records: one per step, per member lists.

:func:`fitstream.collect_pd` writes an ensemble's history one row per epoch and member;
:func:`fitstream.summarize` and :func:`fitstream.plot_history` read it back with
:func:`frame_records` as the records :func:`fitstream.collect` keeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["frame_records", "is_member_frame"]


def is_member_frame(history: Any) -> bool:
    """Whether ``history`` is a DataFrame with a ``member`` column (an ensemble's tidy frame)."""
    columns = getattr(history, "columns", None)
    return columns is not None and hasattr(history, "to_dict") and "member" in list(columns)


def frame_records(history: Any, *, func: str) -> list[Mapping[str, Any]]:
    """The tidy frame's rows back as one record per step, per-member lists and hparams.

    The members' hyperparameters are the plain columns that hold one value per member over
    the run; they go to each record's ``hparams``, not among its values.
    """
    frame = history.reset_index() if "step" not in history.columns else history
    if "member" not in frame.columns or "step" not in frame.columns:
        raise ValueError(
            f"{func}: a DataFrame history must be collect_pd's frame of an ensemble, with "
            f"'step' and 'member' columns; it has {list(frame.columns)}"
        )
    members = sorted(frame["member"].unique().tolist())
    first = frame.drop_duplicates("member").set_index("member")
    by_member = frame.groupby("member")
    # the hyperparameters: the plain columns that hold one value per member over the run
    settings = [
        c
        for c in first.columns
        if c != "step" and bool((by_member[c].nunique(dropna=False) == 1).all())
    ]
    hparams = [
        {c: _plain(first.loc[m, c]) for c in settings if _is_plain(first.loc[m, c])}
        for m in members
    ]
    steps = frame["step"].nunique()
    # Over several steps a column constant per member is a setting, not a curve; over one
    # step every column is, so they are all kept as values too.
    kept_out = set(settings) if steps > 1 else set()
    out: list[Mapping[str, Any]] = []
    for step, part in frame.groupby("step", sort=True):
        rows = part.set_index("member")
        record: dict[str, Any] = {"step": _plain(step), "hparams": hparams}
        for column in rows.columns:
            if column != "step" and column not in kept_out:
                record[column] = [_plain(rows[column].get(m, math.nan)) for m in members]
        out.append(record)
    return out


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds."""
    item = getattr(value, "item", None)
    return item() if type(value).__module__ == "numpy" and callable(item) else value


def _is_plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or type(value).__module__ == "numpy"
