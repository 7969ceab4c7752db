"""The writers behind :func:`fitstream.log_tensorboard`: one pass over a stream.

Its options are checked in :mod:`._tensorboard_options`; where each value goes (run and tag) is
decided in :mod:`._tensorboard_layout`, a grid's settings in :mod:`._tensorboard_settings`; the
HParams sessions are started by :mod:`._tensorboard_sessions`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._internal.lookup import as_float, unseen_keys_error
from .._internal.members import (
    EnsembleLike,
    ensemble_of,
    is_per_member,
)
from .._internal.optional import require
from .._internal.values import scalar_value
from ._members import event_active, recorded_ensemble
from ._tensorboard_layout import RunningBest, TagMap, custom_scalars_layout
from ._tensorboard_options import Options
from ._tensorboard_sessions import start_sessions
from ._tensorboard_settings import Settings, band_tags
from ._tensorboard_summary import write_session_end

__all__ = ["Run"]

_Point = tuple[str, str, float]  # (run folder, tag, value)


def _is_timing(key: str) -> bool:
    return key.endswith("time_sec")


class Run:
    """The writers of one pass over a stream, and what has been logged to them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.summary_writer: Any = require(
            "torch.utils.tensorboard", "tensorboard", feature=options.caller
        ).SummaryWriter
        self._root: Any = options.writer
        self.owned = options.writer is None
        if options.writer is None and options.log_dir is None:  # its folder named by the writer
            self._root = self.summary_writer()
        self.folder = str(options.log_dir if self._root is None else self._root.get_logdir())
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
        self.restart: int | None = None  # the first step of a stream that continues a run
        self.settings: Settings | None = None  # a grid's members by setting (one run each)
        self.layout_holder: Any = None  # the writer of the run that holds the layout
        self.spread: set[str] = set()  # a grid's keys whose folds have differed in a setting

    def never_had(self) -> KeyError | None:
        """The error for names in ``keys`` that no event had (a typo, usually), else None."""
        keys = self.options.keys or ()
        return unseen_keys_error(self.options.caller, "keys", keys, self.keys_had, self.count)

    @property
    def root(self) -> Any:
        """The writer of the log folder itself, made when something goes there.

        An ensemble writes only into its members' (or settings') folders, so the log folder
        holds no event file of its own: no empty run named ``.`` in TensorBoard.
        """
        if self._root is None:
            self._root = self.summary_writer(log_dir=self.folder, purge_step=self.restart)
        return self._root

    def writer(self, run: str) -> Any:
        if run not in self.writers:
            path = os.path.join(self.folder, run)
            # a continued run: TensorBoard hides the killed run's points from this step on
            self.writers[run] = self.summary_writer(log_dir=path, purge_step=self.restart)
        return self.writers[run]

    def continues(self, step: int) -> None:
        """The stream's first event has ``step``: from a step above 1 it continues a run.

        What an earlier pass over the same folders wrote from ``step`` on (the epochs a killed
        run trained after its last checkpoint, written again now) is purged, as TensorBoard
        does with ``SummaryWriter(purge_step=...)``: a session-start event at ``step`` makes
        it hide, in that run folder, every point at or after it written before.
        """
        if step <= 1:
            return
        self.restart = step
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        start = Event(step=step, session_log=SessionLog(status=SessionLog.START))
        opened = [w for w in (self._root, *self.writers.values()) if w is not None]
        for writer in opened:  # those made later get purge_step=step
            writer._get_file_writer().add_event(start)

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
        ensemble: EnsembleLike | None = ensemble_of(event) or recorded_ensemble(event)
        size = None if ensemble is None else len(ensemble)
        if self.sessions is None:
            self.start_sessions(event, ensemble)
        with_best = bool(self.sessions)
        active = [True] if ensemble is None else event_active(event, ensemble)
        if self.settings is not None:
            return self.setting_points(event, size, active, with_best)
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

    def setting_points(
        self, event: Mapping[str, Any], size: int | None, active: list[bool], with_best: bool
    ) -> list[_Point]:
        """A grid's points: per setting, each metric's mean over its folds and the band.

        A key whose folds have never differed within a setting (``lr``, which the setting
        fixes) gets no band: its edges would only repeat the mean.
        """
        assert self.settings is not None
        points: list[_Point] = []
        for key, value in self.values_of(event, size).items():
            run, tag = self.tags.place(key)
            best_of = self.tags.best(key) if with_best and run == "validation" else None
            members = value if isinstance(value, list) else [value] * (size or 1)
            summaries = self.settings.summarize(members, active)
            if any(found is not None and found[2] > found[1] for found in summaries):
                self.spread.add(key)
            low_tag, high_tag = band_tags(tag)
            for s, summary in enumerate(summaries):
                if summary is None:
                    continue
                mean, low, high = summary
                where = f"{self.settings.folders[s]}/{run}"
                points.append((where, tag, mean))
                if key in self.spread:
                    points += [(where, low_tag, low), (where, high_tag, high)]
                if best_of is not None:
                    best = self.best.update((s, key), mean, key=key)
                    if best is not None:
                        points.append((f"{self.settings.folders[s]}/{best_of[0]}", best_of[1],
                                       best))  # fmt: skip
        return points

    def start_sessions(self, event: Mapping[str, Any], ensemble: EnsembleLike | None) -> None:
        """Start the HParams sessions (see :func:`._tensorboard_sessions.start`)."""
        self.sessions, self.folders, self.settings = start_sessions(
            event, ensemble, self.options, writer=self.writer, root=lambda: self.root,
            step=self.count,
        )  # fmt: skip

    def see(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        step = self.step_of(event)
        if self.count == 1:
            self.continues(step)
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
            # into a run that has data (the layout alone would make an empty run of the
            # folder), always the same one: TensorBoard merges the layouts of all runs
            if self.layout_holder is None:
                self.layout_holder = (
                    self._root if self._root is not None else self.writer(sorted(touched)[0])
                )
            self.layout_holder.add_custom_scalars(custom_scalars_layout(self.layout_tags))
            self.layout_holder.flush()
        for run in sorted(touched):
            self.writers[run].flush()

    def finish(self, *, failed: bool) -> None:
        # A writer passed in may have been closed by its owner before the stream ended (a
        # Lightning TensorBoardLogger closes its .experiment when fit ends, just before the
        # stream does). The last writes below reopen it; close it again so that no reopened
        # event file is left behind.
        closed_by_owner = not self.owned and getattr(self._root, "all_writers", True) is None
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
                if self._root is not None:
                    self._root.flush()
            finally:
                if self._root is not None and (self.owned or closed_by_owner):
                    self._root.close()
