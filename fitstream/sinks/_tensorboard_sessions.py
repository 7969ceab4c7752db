"""The HParams sessions of :func:`fitstream.log_tensorboard`: who gets one, showing what.

A single model's run is one session (its optimizer's name and ``lr``, and what ``hparams=``
adds); an ensemble's members are one session each, showing the hyperparameters that differ
between members; a grid's settings (members with a ``fold``, :mod:`._tensorboard_settings`)
are one session each, showing what differs between settings and their number of folds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from .._internal.members import EnsembleLike, differing_keys, member_labels
from .._internal.optimizers import event_optimizers, hparams_of
from ._tensorboard_layout import member_folder
from ._tensorboard_settings import Settings, settings_of
from ._tensorboard_summary import plain_hparams, whole_numbers, write_session_start

if TYPE_CHECKING:
    from ._tensorboard_options import Options

__all__ = ["optimizer_hparams", "start_sessions"]


def optimizer_hparams(event: Mapping[str, Any]) -> dict[str, Any]:
    """The plain hyperparameters of a single model's one torch optimizer; ``{}`` if none.

    Example:
        >>> import torch
        >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01)
        >>> sorted(optimizer_hparams({"optimizer": opt})), optimizer_hparams({"step": 1})
        (['amsgrad', 'beta1', 'beta2', 'eps', 'lr', 'optimizer', 'weight_decay'], {})
    """
    try:
        optimizers = event_optimizers(event, None, func="log_tensorboard")
    except (KeyError, TypeError):  # a source that names no optimizer
        return {}
    if len(optimizers) != 1 or not isinstance(optimizers[0], torch.optim.Optimizer):
        return {}
    return plain_hparams(hparams_of(optimizers[0]))


def start_sessions(
    event: Mapping[str, Any],
    ensemble: EnsembleLike | None,
    options: Options,
    *,
    writer: Callable[[str], Any],
    root: Callable[[], Any],
    step: int,
) -> tuple[list[Any], list[str], Settings | None]:
    """Start the sessions; return their writers, the members' folders and a grid's settings.

    Shown are the hyperparameters given to ``hparams=`` and those that tell runs apart: for an
    ensemble, the members' settings that differ; for one model, its optimizer's name and
    ``lr``. ``all_hparams=True`` adds every optimizer setting.
    """
    common = options.hparams or {}
    sessions: list[Any] = []
    if ensemble is None:
        mine = optimizer_hparams(event)
        if not options.all_hparams:
            mine = {k: v for k, v in mine.items() if k in ("optimizer", "lr")}
        if mine or common:
            (shown,) = whole_numbers([{**mine, **common}], numbers=set(mine) - set(common))
            write_session_start(root(), shown, step)
            sessions.append(root())
        return sessions, [], None
    settings = None if options.per_member else settings_of(list(ensemble.hparams))
    if settings is not None:  # a grid: one session per setting
        tables = [{**common, **plain_hparams(shown)} for shown in settings.hparams]
        for folder, shown in zip(settings.folders, whole_numbers(tables), strict=True):
            write_session_start(writer(folder), shown, step)
            sessions.append(writer(folder))
        return sessions, [], settings
    size = len(ensemble)
    folders = member_labels(ensemble.hparams, lambda k: member_folder(k, size))
    differ = set(differing_keys(ensemble.hparams))
    tables = []
    for member, own in enumerate(ensemble.hparams):
        keep = differ if not options.all_hparams else set(own)
        shown = {k: own[k] for k in own if k in keep}
        tables.append({**common, "member": member, **plain_hparams(shown)})
    for folder, shown in zip(folders, whole_numbers(tables), strict=True):
        write_session_start(writer(folder), shown, step)
        sessions.append(writer(folder))
    return sessions, folders, None
