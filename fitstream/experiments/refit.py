"""``refit``: the winner in hand, trained again on all the rows for the epochs its folds chose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._internal.checks import check_bool, check_positive_int, describe
from .._internal.optional import require
from ..events import Stage
from ..pipeline import pipe
from ..sources import epoch_stream
from ..stages import take
from .search.trials import check_built

__all__ = ["refit"]

_FUNC = "refit"


def refit(
    study: Any,
    build: Callable[[Any], tuple[nn.Module, torch.optim.Optimizer]],
    train_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    *,
    batch_size: int = 1,
    epochs: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    stages: Sequence[Stage] = (),
) -> nn.Module:
    """Train the study's best setting once more, on all the rows, for its best epoch count.

    Cross-validation chose a setting and a number of epochs (the trial's ``best_step``: the
    epoch where the mean over its folds was best); the model to use is that setting trained
    on all the data for that many epochs, as scikit-learn's ``refit=True`` does. ``refit``
    calls ``build`` with an ``optuna.trial.FixedTrial`` of the best trial's parameters (and
    number), and trains the model it returns with :func:`~fitstream.epoch_stream` on
    ``train_data``, shuffled by ``torch.Generator().manual_seed(seed)``, with ``stages``
    applied (a progress bar, say). To use the fold models themselves as an ensemble instead,
    see :func:`~fitstream.load_best`.

    Args:
        study: The study :func:`~fitstream.search` filled.
        build: ``build(trial) -> (model, optimizer)``, as given to the search.
        train_data: All the rows, e.g. ``(X, y)``.
        loss_fn: As for :func:`~fitstream.epoch_stream`.
        batch_size: Rows per mini-batch.
        epochs: Epochs to train; ``None``: the best trial's ``best_step``.
        shuffle: Whether to shuffle the rows every epoch.
        seed: The seed of the shuffle's generator.
        stages: Stages applied to the events.

    Returns:
        The trained model.

    Raises:
        ImportError: Optuna is not installed.
        TypeError: ``study`` is not a study, ``build`` not callable or returning other things.
        ValueError: The study has no ``COMPLETE`` trial, or its best trial says no
            ``best_step`` (a study not filled by ``search``: pass ``epochs=``).

    Example:
        >>> import optuna
        >>> from fitstream import augment, kfold, search, validation_loss
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> X = torch.randn(90, 3); y = X @ torch.tensor([[1.0], [-1.0], [0.5]])
        >>> def build(trial):
        ...     lr = trial.suggest_float("lr", 1e-2, 1e-1, log=True)
        ...     model = nn.Linear(3, 1)
        ...     return model, torch.optim.SGD(model.parameters(), lr=lr)
        >>> folds = kfold(len(X), 3, generator=torch.Generator().manual_seed(0))
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> _ = search(study, build, (X, y), nn.MSELoss(), key="val_loss", epochs=6,
        ...            n_trials=4, slots=12, batch_size=16, folds=folds,
        ...            stages=[augment(validation_loss((X, y), nn.MSELoss(), folds=folds))])
        >>> model = refit(study, build, (X, y), nn.MSELoss(), batch_size=16)
        >>> type(model).__name__, study.best_trial.user_attrs["best_step"] <= 6
        ('Linear', True)
    """
    optuna = require("optuna", "optuna", feature=_FUNC)
    if not isinstance(study, optuna.study.Study):
        raise TypeError(f"{_FUNC}: 'study' must be an optuna Study, got {describe(study)}")
    if not callable(build):
        raise TypeError(f"{_FUNC}: 'build' must be a function of a trial, got {describe(build)}")
    check_positive_int(epochs, func=_FUNC, arg="epochs", allow_none=True)
    check_bool(shuffle, func=_FUNC, arg="shuffle")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{_FUNC}: 'seed' must be an int, got {describe(seed)}")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"{_FUNC}: the study {study.study_name!r} has no COMPLETE trial yet")
    best = study.best_trial
    if epochs is None:
        epochs = best.user_attrs.get("best_step")
        if not isinstance(epochs, int):
            raise ValueError(
                f"{_FUNC}: the best trial {best.number} says no best_step (the study was not "
                "filled by search); pass epochs="
            )
    fixed = optuna.trial.FixedTrial(dict(best.params), number=best.number)
    model, optimizer = check_built(build(fixed), best.number, None, func=_FUNC)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator(device=device).manual_seed(seed) if shuffle else None
    events = epoch_stream(train_data, model, optimizer, loss_fn, batch_size=batch_size,
                          shuffle=shuffle, generator=generator)  # fmt: skip
    for _ in pipe(events, *stages, take(epochs)):
        pass
    return model
