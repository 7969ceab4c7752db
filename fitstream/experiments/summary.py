"""``summarize``: an ensemble's members grouped by setting, judged by their mean curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._internal.checks import check_name
from .._internal.direction import resolve_mode
from .._internal.optional import require
from .history import Curve, check_names, group_curves, member_curves

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SPREAD_DDOF", "mean_and_std", "summarize"]

SPREAD_DDOF = 0
"""The spread is the population standard deviation, as scikit-learn's ``std_test_score``."""


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and standard deviation (``ddof=0``) of ``values``; NaN in, NaN out.

    Example:
        >>> mean_and_std([1.0, 2.0, 3.0])
        (2.0, 0.816496580927726)
    """
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - SPREAD_DDOF)
    return mean, math.sqrt(var)


def _best(values: Sequence[float], mode: str) -> int | None:
    """The position of the best finite value (the first, on a tie), or None if none is."""
    best: int | None = None
    for i, value in enumerate(values):
        if math.isfinite(value) and (
            best is None or (value < values[best] if mode == "min" else value > values[best])
        ):
            best = i
    return best


def _row(by: tuple[str, ...], group: tuple[Any, ...], curves: list[Curve], mode: str) -> Any:
    steps = curves[0].steps
    means = [mean_and_std([c.values[i] for c in curves])[0] for i in range(len(steps))]
    at = _best(means, mode)
    row: dict[Any, Any] = dict(zip(by, group, strict=True))
    row["n"] = len(curves)
    if at is None:
        row.update(best_step=math.nan, mean=math.nan, std=math.nan)
    else:
        mean, std = mean_and_std([c.values[at] for c in curves])
        row.update(best_step=_step(steps[at]), mean=mean, std=std)
    own = [_best(c.values, mode) for c in curves]
    row["member_best"] = [
        math.nan if i is None else c.values[i] for c, i in zip(curves, own, strict=True)
    ]
    row["members"] = [c.member for c in curves]
    row.update((_step(step), value) for step, value in zip(steps, means, strict=True))
    return row


def _step(step: float) -> int | float:
    return int(step) if float(step).is_integer() else step


def summarize(
    history: Any, by: str | Sequence[str], key: str, *, mode: str | None = None
) -> pd.DataFrame:
    """Group an ensemble's members by setting and judge each setting by its mean curve.

    The members that share the values of the hyperparameters ``by`` (the folds of one learning
    rate, the seeds of one width) form a group. For each group, the mean of ``key`` over its
    members is taken at every epoch: the group's curve. The epoch where that curve is best is
    the group's ``best_step``, and the members' values there give ``mean`` and ``std``. This is
    cross-validation with the number of epochs chosen by the mean curve: one epoch count per
    setting, the same for all its folds, as it would be used when retraining on all the data.

    A member frozen early (by :func:`~fitstream.early_stop`, say) keeps, at every later epoch,
    the value it had when it stopped: its last value is carried, as its weights are.

    Args:
        history: An ensemble's history: what :func:`~fitstream.collect` returns for an
            :func:`~fitstream.ensemble_stream` (the records keep the members' ``hparams`` and
            ``active``), the events themselves, or :func:`~fitstream.collect_pd`'s frame.
        by: A hyperparameter name, or a list of names, that the groups share: a member's
            ``hparams`` (its optimizer's, such as ``"lr"``, and those given to
            ``ensemble_stream(hparams=...)``, such as ``"fold"``), read from the first record.
        key: The metric, a per-member key of the history such as ``"val_loss"``. Epochs
            without it (no validation that epoch) are left out.
        mode: ``"min"`` or ``"max"``: which way ``key`` improves. ``None`` infers it from the
            key's name, by the rule every FitStream stage uses (losses and errors down,
            accuracies and scores up); a name that tells neither is an error.

    Returns:
        A pandas DataFrame, one row per group, best group first (by ``mean``), with the
        columns: the ``by`` names; ``n``, the members in the group; ``best_step``; ``mean``
        and ``std`` of ``key`` at ``best_step`` over the group's members (``std`` with
        ``ddof=0``, as scikit-learn's ``std_test_score``); ``member_best``, each member's
        own best value (at whatever epoch it had it); ``members``, their indices; then one
        column per epoch, named by the step (an int), holding the group's mean curve.

    Raises:
        TypeError: ``history`` is not a history, or ``by`` is not a name or list of names.
        KeyError: ``key`` is in no record (the keys there are listed), or a ``by`` name is
            not a hyperparameter of the members (theirs are listed).
        ValueError: ``history`` is empty or not an ensemble's, ``mode`` is not ``"min"``,
            ``"max"`` or None, or the direction cannot be told from ``key``.
        ImportError: pandas is not installed (``pip install 'fitstream[pandas]'``).

    Example:
        Four members, two learning rates with two folds each, three epochs of ``val_loss``:

        >>> history = [
        ...     {"step": 1, "val_loss": [0.9, 0.7, 1.0, 1.2],
        ...      "hparams": [{"lr": 0.1, "fold": 0}, {"lr": 0.1, "fold": 1},
        ...                  {"lr": 0.01, "fold": 0}, {"lr": 0.01, "fold": 1}]},
        ...     {"step": 2, "val_loss": [0.5, 0.7, 0.5, 0.6]},
        ...     {"step": 3, "val_loss": [0.6, 0.4, 0.7, 0.8]},
        ... ]
        >>> table = summarize(history, by="lr", key="val_loss")

        For lr=0.1 the mean curve is (0.9+0.7)/2 = 0.8, (0.5+0.7)/2 = 0.6, (0.6+0.4)/2 = 0.5:
        best at epoch 3, where the folds give 0.6 and 0.4, so mean 0.5 and std 0.1. Each
        fold's own best is 0.5 (epoch 2) and 0.4 (epoch 3). For lr=0.01 the curve is
        (1.0+1.2)/2 = 1.1, (0.5+0.6)/2 = 0.55, (0.7+0.8)/2 = 0.75: best at epoch 2, mean
        0.55 and std 0.05. The lower mean comes first:

        >>> table[["lr", "n", "best_step", "mean", "std"]].round(6).to_dict("records")
        [{'lr': 0.1, 'n': 2, 'best_step': 3, 'mean': 0.5, 'std': 0.1},
         {'lr': 0.01, 'n': 2, 'best_step': 2, 'mean': 0.55, 'std': 0.05}]
        >>> table.loc[0, "member_best"], [round(v, 6) for v in table.loc[1, [1, 2, 3]]]
        ([0.5, 0.4], [1.1, 0.55, 0.75])
    """
    func = "summarize"
    names = check_names(by, func=func, arg="by")
    check_name(key, func=func, what="'key'")
    if mode is not None:
        resolve_mode(key, mode, func=func)
    require("pandas", "pandas", feature="summarize")
    import pandas as pd

    curves = member_curves(history, key, func=func)  # a missing key is named before the mode
    chosen = resolve_mode(key, mode, func=func)
    groups = group_curves(curves, names, func=func)
    rows = [_row(names, group, members, chosen) for group, members in groups.items()]
    order = sorted(
        range(len(rows)),
        key=lambda i: (
            not math.isfinite(rows[i]["mean"]),
            rows[i]["mean"] if chosen == "min" else -rows[i]["mean"],
        ),
    )
    table: pd.DataFrame = pd.DataFrame([rows[i] for i in order])
    return table
