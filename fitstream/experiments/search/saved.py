"""The trained winner kept: each finished trial's best-epoch state saved, and loaded back.

With ``search(..., save_dir=...)`` each trial that completes saves the state of its members at
its best epoch to ``save_dir/trial-<number>.pt`` (written to a temporary file, then renamed, so
a file is whole or absent), and records the path in the trial's user attribute ``state_path``.
:func:`load_best` then gives the study's best model back, in any process: the model ``build``
makes for the best trial's parameters, with the saved state loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..._internal.checks import describe
from ..._internal.optional import require
from ..._internal.states import load_state
from ...sources import Ensemble
from ...stages._checkpoint_file import write_atomically
from .trials import TrialRun, check_built

__all__ = ["FORMAT", "best_copy", "load_best", "save_trial"]

FORMAT = "fitstream.search/1"
"""The format mark of a saved trial state."""


def save_trial(folder: Path, run: TrialRun) -> Path:
    """Save ``run``'s best-epoch states (one per member) to ``folder``; return the file."""
    assert run.best_state is not None
    path = (folder / f"trial-{run.number}.pt").absolute()
    content = {
        "format": FORMAT,
        "trial": run.number,
        "best_step": run.best_step,
        "folds": [f for f in run.folds if f is not None],
        "states": run.best_state,
    }
    write_atomically(path, content)
    return path


def _as_model(models: list[nn.Module], folds: bool) -> nn.Module:
    """One model, or the fold models as one :class:`~fitstream.Ensemble` (``fold`` hparams)."""
    if not folds:
        return models[0]
    ensemble = Ensemble(models)
    ensemble._hparams = lambda: [{"fold": f} for f in range(len(models))]
    return ensemble


def best_copy(run: TrialRun) -> nn.Module:
    """A copy of ``run``'s model(s) with its best epoch's weights (the worker's best, in memory)."""
    assert run.best_state is not None
    models = []
    for model, state in zip(run.models, run.best_state, strict=True):
        clone = copy.deepcopy(model)
        clone.load_state_dict(state)
        models.append(clone)
    return _as_model(models, run.folds[0] is not None)


def load_best(study: Any, build: Callable[[Any], Any]) -> nn.Module:
    """The study's best trained model, from the state its search saved (``save_dir=``).

    ``build`` is the search's own: it is called with an ``optuna.trial.FixedTrial`` of the best
    trial's parameters and number, and the model it returns gets the best trial's weights at
    its best epoch. A trial trained on folds (``search(folds=...)``) gives its F fold models as
    one :class:`~fitstream.Ensemble` (``ensemble(X)`` stacks their outputs, ``(F, n, ...)``;
    average them to predict), in fold order. Works in any process that can read the files:
    another worker's, or a later one.

    Args:
        study: The study the search ran (loaded again with ``optuna.load_study`` if need be).
        build: ``build(trial) -> (model, optimizer)``, as given to the search.

    Returns:
        The best trial's model (or its folds' :class:`~fitstream.Ensemble`), in the mode
        ``build`` made it in.

    Raises:
        ImportError: Optuna is not installed.
        TypeError: ``study`` is not a study, ``build`` not callable or returning other things.
        ValueError: The study has no ``COMPLETE`` trial, the best trial was trained without
            ``save_dir``, its file is not a saved trial state, or the state does not fit the
            model ``build`` makes (the tensor and both shapes are named).
        FileNotFoundError: The saved file is gone (its path and trial are named).

    Example:
        >>> import tempfile, optuna
        >>> from fitstream import augment, search, validation_loss
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> X = torch.randn(64, 3); y = X @ torch.tensor([[1.0], [-1.0], [0.5]])
        >>> def build(trial):
        ...     lr = trial.suggest_float("lr", 1e-2, 1e-1, log=True)
        ...     model = nn.Linear(3, 1)
        ...     return model, torch.optim.SGD(model.parameters(), lr=lr)
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> folder = tempfile.mkdtemp()
        >>> result = search(study, build, (X, y), nn.MSELoss(), key="val_loss", epochs=5,
        ...                 n_trials=4, slots=4, batch_size=16, save_dir=folder,
        ...                 stages=[augment(validation_loss((X, y), nn.MSELoss()))])
        >>> model = load_best(study, build)
        >>> torch.equal(model.weight, result.best_model.weight)
        True
    """
    func = "load_best"
    optuna = require("optuna", "optuna", feature=func)
    if not isinstance(study, optuna.study.Study):
        raise TypeError(f"{func}: 'study' must be an optuna Study, got {describe(study)}")
    if not callable(build):
        raise TypeError(f"{func}: 'build' must be a function of a trial, got {describe(build)}")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"{func}: the study {study.study_name!r} has no COMPLETE trial yet")
    best = study.best_trial
    where = f"trial {best.number} (the best)"
    path = best.user_attrs.get("state_path")
    if not isinstance(path, str):
        raise ValueError(
            f"{func}: {where} has no saved state: it was trained without save_dir; run "
            "search(..., save_dir=...) to keep each trial's trained weights"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"{func}: the saved state of {where}, {path!r}, is gone")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{func}: {path!r} of {where} is not a state saved by search")
    fixed = optuna.trial.FixedTrial(dict(best.params), number=best.number)
    models = []
    for position, state in enumerate(content["states"]):
        model, _ = check_built(build(fixed), best.number, None, func=func)
        what = f"the saved state of {where}" + (f", fold {position}" if content["folds"] else "")
        load_state(model, state, func=func, what=what)
        models.append(model)
    return _as_model(models, bool(content["folds"]))
