"""The worker's ensembles: which trials train together, and where a new trial goes.

A worker trains its trials in one or more ensembles (:class:`Group`), one per architecture,
stepped in turn one epoch each (a *round*). A trial takes a *block* of consecutive members, F
of them with F folds (member ``f`` of the block trains on fold ``f``), so a block keeps its
folds' rows when it passes from one trial to the next. ``slots`` bounds the members of all the
worker's ensembles together.

Where a new trial goes (:meth:`Slots.place`): into a free block of an ensemble of its
architecture (``Ensemble.replace``: the other members train on undisturbed), else into an
ensemble of its own, started at once. After each round (:meth:`Slots.tidy`) an ensemble left
with free blocks is rebuilt from its live trials, and the ensembles of one architecture are
merged into one, so no epoch is spent on an empty slot. A rebuilt ensemble continues each trial
exactly where it stopped: the members keep their weights, optimizer state and data order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

from .trials import TrialRun

__all__ = ["Group", "Slots"]

Maker = Callable[[list[TrialRun]], Iterator[dict[str, Any]]]


class Group:
    """One ensemble: the trials of one architecture, each in a block of members."""

    def __init__(self, kind: Hashable, runs: list[TrialRun], make: Maker) -> None:
        self.kind, self.make = kind, make
        self.blocks: list[TrialRun | None] = list(runs)
        self.size = runs[0].size  # members per block
        self.pipeline = make(runs)
        self.ensemble: Any = None  # known from the first event

    def live(self) -> list[TrialRun]:
        """The trials training here, in block order."""
        return [run for run in self.blocks if run is not None]

    def members_of(self, block: int) -> range:
        """The ensemble members of ``block``."""
        return range(block * self.size, (block + 1) * self.size)

    def step(self) -> dict[str, Any]:
        """Train one epoch of every member; the ensemble's event after the user's stages."""
        event = next(self.pipeline)
        self.ensemble = event["model"]
        return event

    def add(self, run: TrialRun) -> None:
        """Add ``run`` to an ensemble that has not trained yet (its stream is made anew)."""
        self.close()
        self.blocks.append(run)
        self.pipeline = self.make(self.live())

    def end(self, block: int) -> None:
        """Free ``block``: its members are frozen and its trial leaves."""
        for k in self.members_of(block):
            self.ensemble.freeze(k)
        self.blocks[block] = None

    def put(self, block: int, run: TrialRun) -> None:
        """Put ``run``'s members into free ``block`` (Ensemble.replace, one member per fold)."""
        for f, k in enumerate(self.members_of(block)):
            self.ensemble.replace(k, run.members[f], run.member_optimizers[f],
                                  hparams=run.hparams(f), generator=run.generators[f])  # fmt: skip
        self.blocks[block] = run

    def close(self) -> None:
        """Stop the ensemble's stream (its trials keep their state in their own modules)."""
        close = getattr(self.pipeline, "close", None)
        if callable(close):
            close()


class Slots:
    """The worker's ensembles, bounded by ``capacity`` members in all."""

    def __init__(self, capacity: int, make: Maker) -> None:
        self.capacity, self.make = capacity, make
        self.groups: list[Group] = []

    def used(self) -> int:
        """The members that train a trial, over all ensembles."""
        return sum(run.size for group in self.groups for run in group.live())

    def free(self) -> int:
        """The members a new trial could still take."""
        return self.capacity - self.used()

    def runs(self) -> list[TrialRun]:
        """Every trial the worker trains."""
        return [run for group in self.groups for run in group.live()]

    def place(self, run: TrialRun, prefer: Group | None = None) -> None:
        """Put ``run`` into a free block of its architecture, else into a new ensemble."""
        candidates = ([prefer] if prefer is not None else []) + self.groups
        for group in candidates:
            if group.kind != run.kind:
                continue
            if group.ensemble is None:  # made this round, not started: it takes one more
                group.add(run)
                return
            free = [b for b, r in enumerate(group.blocks) if r is None]
            if free:
                group.put(free[0], run)
                return
        self.groups.append(Group(run.kind, [run], self.make))

    def tidy(self) -> None:
        """Rebuild ensembles with free blocks from their live trials; merge those of one kind."""
        kinds: dict[Hashable, list[Group]] = {}
        for group in self.groups:
            kinds.setdefault(group.kind, []).append(group)
        kept: list[Group] = []
        for kind, groups in kinds.items():
            runs = [run for group in groups for run in group.live()]
            full = all(None not in group.blocks for group in groups)
            if len(groups) == 1 and full:
                kept.append(groups[0])
                continue
            for group in groups:
                group.close()
            if runs:
                kept.append(Group(kind, runs, self.make))
        self.groups = kept

    def close(self) -> None:
        """Stop every ensemble's stream."""
        for group in self.groups:
            group.close()
        self.groups = []
