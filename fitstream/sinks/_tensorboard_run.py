"""The writers behind :func:`fitstream.log_tensorboard`: its checked options and one pass.

Where each value goes (run and tag) is decided in :mod:`._tensorboard_layout`; the HParams
sessions are written by :mod:`._tensorboard_summary`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._internal.checks import check_bool, check_positive_int
from .._internal.lookup import as_float, unseen_keys_error
from .._internal.members import (
    EnsembleLike,
    differing_keys,
    ensemble_of,
    is_per_member,
    member_labels,
)
from .._internal.optimizers import event_optimizers, hparams_of
from .._internal.optional import require
from .._internal.paths import check_folder_target
from .._internal.values import scalar_value
from ._members import event_active
from ._records import check_key_names
from ._tensorboard_layout import RunningBest, TagMap, custom_scalars_layout, member_folder
from ._tensorboard_summary import (
    check_hparams,
    plain_hparams,
    write_session_end,
    write_session_start,
)

__all__ = ["Options", "Run", "check_options"]

_Point = tuple[str, str, float]  # (run folder, tag, value)


@dataclass(frozen=True)
class Options:
    caller: str
    log_dir: str | None
    writer: Any
    keys: tuple[str, ...] | None
    every: int
    hparams: dict[str, bool | int | float | str] | None
    all_hparams: bool


def check_options(
    caller: str,
    *,
    log_dir: object,
    writer: object,
    keys: object,
    every: object,
    hparams: object,
    all_hparams: object = False,
) -> Options:
    require("tensorboard", "tensorboard", feature=caller)
    require("torch.utils.tensorboard", "tensorboard", feature=caller)
    if log_dir is not None and writer is not None:
        raise ValueError(
            f"{caller}: pass log_dir or writer, not both (got log_dir={log_dir!r:.80} and "
            f"writer={writer!r:.80})"
        )
    if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
        raise TypeError(
            f"{caller}: log_dir must be a folder path (str or os.PathLike) or None, got "
            f"{type(log_dir).__name__}: {log_dir!r:.80}"
        )
    if log_dir is not None:
        check_folder_target(Path(log_dir), func=caller, arg="log_dir")
    needed = ["add_scalar", "add_custom_scalars", "flush", "get_logdir"]
    if hparams is not None:
        needed.append("_get_file_writer")
    if writer is not None and not all(callable(getattr(writer, m, None)) for m in needed):
        raise TypeError(
            f"{caller}: writer must be an open torch.utils.tensorboard.SummaryWriter (e.g. a "
            f"Lightning TensorBoardLogger's .experiment), got {type(writer).__name__}: "
            f"{writer!r:.80}"
        )
    check_positive_int(every, func=caller, arg="every")
    check_bool(all_hparams, func=caller, arg="all_hparams")
    return Options(
        caller=caller,
        log_dir=None if log_dir is None else str(os.fspath(log_dir)),
        writer=writer,
        keys=check_key_names(keys, name="keys", caller=caller),
        every=every,  # type: ignore[arg-type]
        hparams=check_hparams(hparams, caller=caller),
        all_hparams=bool(all_hparams),
    )


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


def _is_timing(key: str) -> bool:
    return key.endswith("time_sec")


class Run:
    """The writers of one pass over a stream, and what has been logged to them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.summary_writer: Any = require(
            "torch.utils.tensorboard", "tensorboard", feature=options.caller
        ).SummaryWriter
        if options.writer is not None:
            self.root, self.owned = options.writer, False
        else:
            self.root, self.owned = self.summary_writer(log_dir=options.log_dir), True
        self.folder = str(self.root.get_logdir())
        self.writers: dict[str, Any] = {}  # sub-run folder -> the writer opened for it
        self.count = 0
        self.last_step = 0
        self.pending: tuple[int, list[_Point]] | None = None
        self.tags = TagMap()
        self.best = RunningBest()
        self.layout_tags: set[str] = set()
        self.sessions: list[Any] | None = None  # the writers holding a session, once started
        self.folders: list[str] = []  # an ensemble's run folders, by what tells members apart
        self.keys_had: set[str] = set()  # with keys=: every key any event had

    def never_had(self) -> KeyError | None:
        """The error for names in ``keys`` that no event had (a typo, usually), else None."""
        keys = self.options.keys or ()
        return unseen_keys_error(self.options.caller, "keys", keys, self.keys_had, self.count)

    def writer(self, run: str) -> Any:
        if run not in self.writers:
            path = os.path.join(self.folder, run)
            self.writers[run] = self.summary_writer(log_dir=path)
        return self.writers[run]

    def step_of(self, event: Mapping[str, Any]) -> int:
        if "step" not in event:
            return self.count
        step = scalar_value(event["step"])
        if isinstance(step, int) and not isinstance(step, bool) and abs(step) > 2**53:
            raise ValueError(
                f"{self.options.caller}: an event's 'step' is too large for TensorBoard's "
                f"x-axis (at most 2**53), got {str(step)[:40]}..."
            )
        if step is None or isinstance(step, bool) or not float(step).is_integer():
            raise TypeError(
                f"{self.options.caller}: an event's 'step' must be an int (it is the x-axis), "
                f"got {type(event['step']).__name__}: {event['step']!r:.80}"
            )
        return int(step)

    def number(self, key: str, value: object, size: int | None) -> float | list[float] | None:
        """The value to log for ``key``: a float, K floats of an ensemble, or None (skip)."""
        if size is not None and is_per_member(value):
            members = [as_float(v, key, func=self.options.caller) for v in value]  # type: ignore[attr-defined]
            if len(members) == size:
                return members
        number = scalar_value(value)
        if number is not None and (self.options.keys is not None or not isinstance(number, bool)):
            return as_float(number, key, func=self.options.caller)
        if self.options.keys is not None:
            expected = f"a number or a list of {size} (one per member)" if size else "a number"
            raise TypeError(
                f"{self.options.caller}: keys names {key!r}, whose value is not {expected}: "
                f"got {type(value).__name__}: {value!r:.80}"
            )
        return None

    def values_of(self, event: Mapping[str, Any], size: int | None) -> dict[str, Any]:
        keys = self.options.keys
        if keys is None:
            named = [k for k in event if k != "step" and not _is_timing(k)]
        else:
            self.keys_had.update(event)
            named = [k for k in keys if k in event]  # an epoch may lack val_loss
        found = {key: self.number(key, event[key], size) for key in named}
        return {key: value for key, value in found.items() if value is not None}

    def points_of(self, event: Mapping[str, Any]) -> list[_Point]:
        ensemble = ensemble_of(event)
        size = None if ensemble is None else len(ensemble)
        if self.sessions is None:
            self.start_sessions(event, ensemble)
        with_best = bool(self.sessions)
        active = [True] if ensemble is None else event_active(event, ensemble)
        points: list[_Point] = []
        for key, value in self.values_of(event, size).items():
            run, tag = self.tags.place(key)
            best_of = self.tags.best(key) if with_best and run == "validation" else None
            per_member = value if isinstance(value, list) else [value] * (size or 1)
            for member, number in enumerate(per_member):
                if not active[member]:
                    continue  # a frozen member's run ends where it stopped training
                prefix = "" if size is None else self.folders[member] + "/"
                points.append((prefix + run, tag, number))
                if best_of is not None:
                    best = self.best.update((member, key), number, key=key)
                    if best is not None:
                        points.append((prefix + best_of[0], best_of[1], best))
        return points

    def start_sessions(self, event: Mapping[str, Any], ensemble: EnsembleLike | None) -> None:
        """Start the HParams sessions: the run's, or one per member of an ensemble.

        Shown are the hyperparameters given to ``hparams=`` and those that tell runs apart:
        for an ensemble, the members' settings that differ; for one model, its optimizer's
        name and ``lr``. ``all_hparams=True`` adds every optimizer setting.
        """
        common = self.options.hparams or {}
        self.sessions = []
        if ensemble is None:
            mine = optimizer_hparams(event)
            if not self.options.all_hparams:
                mine = {k: v for k, v in mine.items() if k in ("optimizer", "lr")}
            if mine or common:
                write_session_start(self.root, {**mine, **common}, self.count)
                self.sessions.append(self.root)
            return
        size = len(ensemble)
        self.folders = member_labels(ensemble.hparams, lambda k: member_folder(k, size))
        differ = set(differing_keys(ensemble.hparams))
        for member, own in enumerate(ensemble.hparams):
            keep = differ if not self.options.all_hparams else set(own)
            shown = {k: own[k] for k in own if k in keep}
            hparams = {**common, "member": member, **plain_hparams(shown)}
            writer = self.writer(self.folders[member])
            write_session_start(writer, hparams, self.count)
            self.sessions.append(writer)

    def see(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        step = self.step_of(event)
        points = self.points_of(event)
        self.last_step = step
        if (self.count - 1) % self.options.every == 0:
            self.write(step, points)
            self.pending = None
        else:
            self.pending = (step, points)

    def write(self, step: int, points: list[_Point]) -> None:
        touched = set()
        for run, tag, value in points:
            self.writer(run).add_scalar(tag, value, step)
            touched.add(run)
        tags = {tag for _, tag, _ in points}
        if not self.layout_tags.issuperset(tags):
            self.layout_tags.update(tags)
            self.root.add_custom_scalars(custom_scalars_layout(self.layout_tags))
            self.root.flush()
        for run in sorted(touched):
            self.writers[run].flush()

    def finish(self, *, failed: bool) -> None:
        # A writer passed in may have been closed by its owner before the stream ended (a
        # Lightning TensorBoardLogger closes its .experiment when fit ends, just before the
        # stream does). The last writes below reopen it; close it again so that no reopened
        # event file is left behind.
        closed_by_owner = not self.owned and getattr(self.root, "all_writers", True) is None
        try:
            if self.pending is not None:
                self.write(*self.pending)
                self.pending = None
            for writer in self.sessions or ():
                write_session_end(writer, failed=failed, step=self.last_step)
        finally:
            try:
                for writer in self.writers.values():
                    writer.close()
                self.root.flush()
            finally:
                if self.owned or closed_by_owner:
                    self.root.close()
