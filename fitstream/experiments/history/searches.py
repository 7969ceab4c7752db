"""The history of a search (:func:`~fitstream.search_events`) read trial by trial.

A search's events come from several ensembles, stepped in turn, whose members change as
trials end and others take their slots. Each event says which trial each member holds
(``trial``) and at which of the trial's epochs (``trial_step``), so the history is read as one
curve per trial and fold, whatever ensemble, slot or event order it trained in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..._internal.checks import describe
from ..._internal.members import ensemble_of
from .curves import Curve, number

__all__ = ["is_search", "search_curves"]


def is_search(records: list[Mapping[str, Any]]) -> bool:
    """Whether the records are a search's: they say which trial each member holds."""
    return any(isinstance(record.get("trial"), list) for record in records)


def _hparams(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    ensemble = ensemble_of(record)
    if ensemble is not None:
        return [dict(h) for h in ensemble.hparams]
    hparams = record.get("hparams")
    return hparams if isinstance(hparams, list) else []


def search_curves(records: list[Mapping[str, Any]], key: str, *, func: str) -> list[Curve]:
    """One :class:`Curve` of ``key`` per trial and fold, in the order the trials first train.

    Example:
        >>> records = [
        ...     {"trial": [0, 1], "trial_step": [1, 1], "val_loss": [0.5, 0.9],
        ...      "hparams": [{"trial": 0, "params_lr": 0.1}, {"trial": 1, "params_lr": 0.2}]},
        ...     {"trial": [0, 2], "trial_step": [2, 1], "val_loss": [0.4, 0.7],
        ...      "hparams": [{"trial": 0, "params_lr": 0.1}, {"trial": 2, "params_lr": 0.3}]},
        ... ]
        >>> [(c.hparams["trial"], c.steps, c.values) for c in search_curves(records, "val_loss",
        ...                                                                 func="f")]
        [(0, [1.0, 2.0], [0.5, 0.4]), (1, [1.0], [0.9]), (2, [1.0], [0.7])]
    """
    found: dict[tuple[Any, ...], tuple[Mapping[str, Any], list[float], list[float]]] = {}
    for position, record in enumerate(records):
        trials, steps, values = record.get("trial"), record.get("trial_step"), record.get(key)
        if not isinstance(trials, list) or key not in record:
            continue
        if (
            not isinstance(values, list)
            or not isinstance(steps, list)
            or (len(values) != len(trials) or len(steps) != len(trials))
        ):
            raise ValueError(
                f"{func}: record {position}'s {key!r} and 'trial_step' must hold one value per "
                f"member, as its 'trial' does ({len(trials)}); got {describe(values)}"
            )
        hparams = _hparams(record)
        for k, number_ in enumerate(trials):
            trial = number(number_)
            if math.isnan(trial):  # an empty slot
                continue
            own = hparams[k] if k < len(hparams) else {"trial": int(trial)}
            entry = found.setdefault((int(trial), own.get("fold")), (own, [], []))
            entry[1].append(number(steps[k]))
            entry[2].append(number(values[k]))
    return [Curve(m, own, steps, values) for m, (own, steps, values) in enumerate(found.values())]
