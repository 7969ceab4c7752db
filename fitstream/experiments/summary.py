"""``summarize``: members grouped by setting, judged by their mean curve, with the margins."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._internal.checks import check_name
from .._internal.direction import resolve_mode
from .._internal.optional import require
from .history import (
    Curve,
    check_names,
    group_curves,
    is_study,
    member_curves,
    study_key,
    study_mode,
    study_params,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SPREAD_DDOF", "mean_and_std", "sem", "summarize"]

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


def sem(values: Sequence[float]) -> float:
    """The standard error of the mean: the sample standard deviation (``ddof=1``) / sqrt(n).

    NaN for fewer than two values.

    Example:
        >>> round(sem([0.6, 0.4]), 6), sem([1.0])
        (0.1, nan)
    """
    n = len(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _best(values: Sequence[float], mode: str) -> int | None:
    """The position of the best finite value (the first, on a tie), or None if none is."""
    best: int | None = None
    for i, value in enumerate(values):
        if math.isfinite(value) and (
            best is None or (value < values[best] if mode == "min" else value > values[best])
        ):
            best = i
    return best


@dataclass
class _Group:
    """One setting: its members' curves, their mean curve, and its best epoch."""

    values: tuple[Any, ...]
    curves: list[Curve]
    steps: list[float]
    means: list[float]
    at: int | None  # position of the best step in ``steps``

    def at_best(self) -> list[tuple[Any, float]]:
        """Each member's fold (or None) and value at the group's best step."""
        if self.at is None:
            return []
        step = self.steps[self.at]
        return [(c.fold, c.values[c.steps.index(step)]) for c in self.curves if step in c.steps]


def _group(values: tuple[Any, ...], curves: list[Curve], mode: str) -> _Group:
    steps = sorted({s for c in curves for s in c.steps})
    means = []
    for step in steps:
        present = [c.values[c.steps.index(step)] for c in curves if step in c.steps]
        means.append(mean_and_std(present)[0])
    return _Group(values, curves, steps, means, _best(means, mode))


def _paired(group: _Group, best: _Group) -> tuple[float, float]:
    """The difference to the best setting and its standard error.

    Fold by fold when both have the same folds, else from the two means.
    """
    mine, theirs = dict(group.at_best()), dict(best.at_best())
    folds_known = None not in mine and None not in theirs
    if folds_known and len(mine) == len(group.at_best()) and set(mine) == set(theirs):
        differences = [mine[f] - theirs[f] for f in mine]
        return mean_and_std(differences)[0], sem(differences)
    a = [v for _, v in group.at_best()]
    b = [v for _, v in best.at_best()]
    if not a or not b:
        return math.nan, math.nan
    spread = math.sqrt(sem(a) ** 2 + sem(b) ** 2) if len(a) > 1 and len(b) > 1 else math.nan
    return mean_and_std(a)[0] - mean_and_std(b)[0], spread


def _row(by: Sequence[str], group: _Group, best: _Group, mode: str) -> dict[Any, Any]:
    row: dict[Any, Any] = dict(zip(by, group.values, strict=True))
    row["n"] = len(group.curves)
    values = [v for _, v in group.at_best()]
    if group.at is None:
        row.update(best_step=math.nan, mean=math.nan, std=math.nan, sem=math.nan)
    else:
        mean, std = mean_and_std(values)
        row.update(best_step=_step(group.steps[group.at]), mean=mean, std=std, sem=sem(values))
    diff, diff_sem = (0.0, 0.0) if group is best else _paired(group, best)
    row.update(diff=diff, diff_sem=diff_sem)
    row["best_at_end"] = group.at is not None and group.at == len(group.steps) - 1
    own = [_best(c.values, mode) for c in group.curves]
    row["member_best"] = [
        math.nan if i is None else c.values[i] for c, i in zip(group.curves, own, strict=True)
    ]
    row["members"] = [c.member for c in group.curves]
    row.update((_step(step), value) for step, value in zip(group.steps, group.means, strict=True))
    return row


def _step(step: float) -> int | float:
    return int(step) if float(step).is_integer() else step


def _defaults(
    history: Any, by: object, key: object, mode: object, *, func: str
) -> tuple[tuple[str, ...], str, str | None]:
    """``by``, ``key`` and ``mode``, with a study's own where they are left out."""
    if is_study(history):
        own = study_key(history)
        key = own if key is None else key
        if key is None:
            raise ValueError(
                f"{func}: the study does not say which key its search optimised; pass key="
            )
        names = study_params(history) if by is None else check_names(by, func=func, arg="by")
        if not names:
            raise ValueError(f"{func}: the study has no COMPLETE trial with parameters yet")
        return names, str(key), study_mode(history) if mode is None else str(mode)
    if by is None or key is None:
        missing = [name for name, value in (("by", by), ("key", key)) if value is None]
        raise TypeError(
            f"{func}: give {' and '.join(repr(m) for m in missing)} for a history (only a "
            "study knows its parameters and its key)"
        )
    return check_names(by, func=func, arg="by"), key, mode  # type: ignore[return-value]


def summarize(
    history: Any,
    by: str | Sequence[str] | None = None,
    key: str | None = None,
    *,
    mode: str | None = None,
) -> pd.DataFrame:
    """Group members by setting, judge each setting by its mean curve, and say by how much.

    The members that share the values of the hyperparameters ``by`` (the folds of one learning
    rate, the seeds of one width) form a group, a *setting*. For each setting, the mean of
    ``key`` over its members is taken at every epoch: the setting's curve. The epoch where that
    curve is best is its ``best_step``, and the members' values there give ``mean``, ``std``
    and ``sem``. This is cross-validation with the number of epochs chosen by the mean curve:
    one epoch count per setting, the same for all its folds, as it would be used when
    retraining on all the data (:func:`~fitstream.refit`).

    Whether the winner really wins: ``diff`` is each setting's difference to the best one,
    and ``diff_sem`` its standard error. When both settings' members carry the same ``fold``
    values (cross-validation, or :func:`~fitstream.search` with ``folds``), the difference is
    taken fold by fold on the same folds (a paired comparison: the folds' own difficulty
    cancels out); otherwise from the two means, ``diff_sem = sqrt(sem_a**2 + sem_b**2)``. A
    ``diff`` within about two ``diff_sem`` of zero is not a difference the data can tell.
    ``best_at_end`` flags a setting whose best epoch is the last one it trained: more epochs
    may still help it.

    ``history`` is an ensemble's history, several of them, a search's, or a study:

    * what :func:`~fitstream.collect` returns for an :func:`~fitstream.ensemble_stream`, the
      events themselves, or :func:`~fitstream.collect_pd`'s frame;
    * several streams' histories joined into one list (``h16 + h64``): they are cut where
      the steps start again, or the members or their hyperparameters change, and each keeps
      its members' own hyperparameters; a dict ``{name: history}`` names each stream, as the
      hyperparameter ``stream``;
    * the events of :func:`~fitstream.search_events` (each trial and fold a member; the
      parameters are the hyperparameters ``params_<name>``);
    * an Optuna study filled by :func:`~fitstream.search`: its ``COMPLETE`` trials, each
      trial's folds its members, by the parameters' own names. ``by`` defaults to every
      parameter, ``key`` to the key the search optimised, ``mode`` to the study's direction.

    A member frozen early (by :func:`~fitstream.early_stop`, say) keeps, at every later epoch,
    the value it had when it stopped: its last value is carried, as its weights are.

    Args:
        history: A history, as above.
        by: A hyperparameter name, or a list of names, that a setting's members share: a
            member's ``hparams`` (its optimizer's, such as ``"lr"``, and those given to
            ``ensemble_stream(hparams=...)``, such as ``"fold"``).
        key: The metric, a per-member key such as ``"val_loss"``. Epochs without it (no
            validation that epoch) are left out.
        mode: ``"min"`` or ``"max"``: which way ``key`` improves. ``None`` infers it from the
            key's name, by the rule every FitStream stage uses (losses and errors down,
            accuracies and scores up), or from a study's direction.

    Returns:
        A pandas DataFrame, one row per setting, best first (by ``mean``), with the columns:
        the ``by`` names; ``n``, the members in the setting; ``best_step``; ``mean``, ``std``
        (``ddof=0``, as scikit-learn's ``std_test_score``) and ``sem`` (``ddof=1`` standard
        deviation / sqrt(n)) of ``key`` at ``best_step``; ``diff`` and ``diff_sem``, the
        difference to the best setting and its standard error (0 for the best);
        ``best_at_end``; ``member_best``, each member's own best value (at whatever epoch);
        ``members``, their indices; then one column per epoch, named by the step (an int),
        holding the setting's mean curve.

    Raises:
        TypeError: ``history`` is not a history, ``by`` is not a name or list of names, ``by``
            or ``key`` is missing for a history that is not a study, or a member's value of
            ``key`` is a string.
        KeyError: ``key`` is in no record (the keys there are listed), a ``by`` name is not a
            hyperparameter of the members (theirs are listed), or a study kept another key.
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
        best at epoch 3 (its last: ``best_at_end``), where the folds give 0.6 and 0.4, so mean
        0.5, std 0.1 and sem = sqrt(((0.1)**2 + (0.1)**2) / 1) / sqrt(2) = 0.1. For lr=0.01
        the curve is 1.1, 0.55, 0.75: best at epoch 2, where the folds give 0.5 and 0.6: mean
        0.55, std 0.05, sem 0.05. The lower mean comes first:

        >>> columns = ["lr", "n", "best_step", "mean", "std", "sem", "best_at_end"]
        >>> table[columns].round(6).to_dict("records")
        [{'lr': 0.1, 'n': 2, 'best_step': 3, 'mean': 0.5, 'std': 0.1, 'sem': 0.1,
          'best_at_end': True},
         {'lr': 0.01, 'n': 2, 'best_step': 2, 'mean': 0.55, 'std': 0.05, 'sem': 0.05,
          'best_at_end': False}]

        Does lr=0.1 really win? Fold by fold, lr=0.01 is 0.5 - 0.6 = -0.1 on fold 0 and
        0.6 - 0.4 = 0.2 on fold 1: a mean difference of 0.05, whose standard error is
        sqrt(((-0.15)**2 + 0.15**2) / 1) / sqrt(2) = 0.15. A difference of 0.05 ± 0.15: these
        two folds cannot tell the settings apart.

        >>> table[["diff", "diff_sem"]].round(6).to_dict("records")
        [{'diff': 0.0, 'diff_sem': 0.0}, {'diff': 0.05, 'diff_sem': 0.15}]
        >>> table.loc[0, "member_best"], [round(v, 6) for v in table.loc[1, [1, 2, 3]]]
        ([0.5, 0.4], [1.1, 0.55, 0.75])
    """
    func = "summarize"
    names, key, mode = _defaults(history, by, key, mode, func=func)
    check_name(key, func=func, what="'key'")
    if mode is not None:
        resolve_mode(key, mode, func=func)
    require("pandas", "pandas", feature="summarize")
    import pandas as pd

    curves = member_curves(history, key, func=func)  # a missing key is named before the mode
    chosen = resolve_mode(key, mode, func=func)
    groups = [
        _group(values, members, chosen)
        for values, members in group_curves(curves, names, func=func).items()
    ]

    def order(group: _Group) -> tuple[bool, float]:
        mean = math.nan if group.at is None else mean_and_std([v for _, v in group.at_best()])[0]
        return (not math.isfinite(mean), mean if chosen == "min" else -mean)

    ranked = sorted(groups, key=order)
    table: pd.DataFrame = pd.DataFrame([_row(names, g, ranked[0], chosen) for g in ranked])
    return table
