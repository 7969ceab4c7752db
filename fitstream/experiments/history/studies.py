"""An Optuna study filled by :func:`~fitstream.search`, read as a history: one curve per fold.

Each trial the search completes keeps, in its user attributes, its members' values of the
key at every epoch (``curves``: one list per fold, one without folds), its ``folds`` and the
key's name, so the study itself is a history that :func:`~fitstream.summarize` and
:func:`~fitstream.plot_history` read like any other. A member's hyperparameters are the
trial's parameters (by their own names), ``trial`` and, with folds, ``fold``. Only ``COMPLETE``
trials are read: a pruned trial has no value to compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .curves import Curve, number

__all__ = ["is_study", "study_curves", "study_key", "study_mode", "study_params"]


def is_study(history: object) -> bool:
    """Whether ``history`` is an Optuna study."""
    return type(history).__name__ == "Study" and type(history).__module__.startswith("optuna")


def _complete(study: Any) -> list[Any]:
    import optuna

    return list(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def study_key(study: Any) -> str | None:
    """The key the study's search optimised (kept in its user attributes), if known."""
    info = study.user_attrs.get("fitstream")
    key = info.get("key") if isinstance(info, dict) else None
    return key if isinstance(key, str) else None


def study_mode(study: Any) -> str:
    """``"min"`` for a study that minimizes, ``"max"`` for one that maximizes."""
    import optuna

    return "min" if study.direction == optuna.study.StudyDirection.MINIMIZE else "max"


def study_params(study: Any) -> tuple[str, ...]:
    """The parameters every complete trial has, in the first trial's order."""
    trials = _complete(study)
    if not trials:
        return ()
    common = set(trials[0].params)
    for trial in trials[1:]:
        common &= set(trial.params)
    return tuple(name for name in trials[0].params if name in common)


def study_curves(study: Any, key: str, *, func: str) -> list[Curve]:
    """One :class:`Curve` per complete trial and fold, in trial order."""
    own = study_key(study)
    if own is not None and key != own:
        raise KeyError(
            f"{func}: the study keeps the values of {own!r}, the key its search optimised; "
            f"got key={key!r}"
        )
    trials = _complete(study)
    if not trials:
        raise ValueError(f"{func}: the study {study.study_name!r} has no COMPLETE trial yet")
    curves: list[Curve] = []
    for trial in trials:
        kept = trial.user_attrs.get("curves")
        folds: Sequence[Any] = trial.user_attrs.get("folds") or [None]
        if not isinstance(kept, list):  # not filled by search: its reported values
            steps = sorted(trial.intermediate_values)
            kept = [[trial.intermediate_values[s] for s in steps]] if steps else [[trial.value]]
        for f, values in enumerate(kept):
            hparams = {**trial.params, "trial": trial.number}
            fold = folds[f] if f < len(folds) else None
            if fold is not None:
                hparams["fold"] = fold
            points = [number(v) for v in values]
            steps_of = [float(i) for i in range(1, len(points) + 1)]
            curves.append(Curve(len(curves), hparams, steps_of, points))
    return curves
