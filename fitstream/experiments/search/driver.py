"""The search's loop: ask trials as slots free up, train them as ensembles, tell the study.

One worker runs :class:`_Worker`: it fills its slots (:mod:`.slots`) with trials asked under
the study's rules (:mod:`.book`, :mod:`.rules`), steps its ensembles in turn, one epoch each,
reports each trial's value (the mean over its folds) to its pruner, tells each trial how it
ended, keeps its best state (:mod:`.saved`), and shows its progress (:mod:`.progress`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...events import Stage
from ...pipeline import pipe
from ...sources import ensemble_stream
from .book import Book
from .carriers import Family, Widths, carrier_of
from .heartbeat import Heartbeat
from .progress import SearchBar, best_text, log_finished
from .saved import best_copy, save_trial
from .slots import Group, Slots
from .trials import BuildError, TrialRun, architecture, better, build_members, original_number
from .writes import KeptInterrupt, read

__all__ = ["Plan", "Worker"]

_LOG = logging.getLogger("fitstream.search")


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to train its trials, checked at the call."""

    build: Callable[[Any], Any]
    train_data: Sequence[torch.Tensor]
    loss_fn: Callable[..., torch.Tensor]
    device: torch.device
    key: str
    epochs: int
    slots: int
    batch_size: int
    stages: list[Stage]
    prune: bool
    every: int
    shuffle: bool
    seed: int
    folds: list[tuple[torch.Tensor, torch.Tensor]] | None
    save_dir: Path | None
    pad: bool
    func: str

    @property
    def per_trial(self) -> int:
        """Members per trial: one per fold."""
        return 1 if self.folds is None else len(self.folds)


class Worker:
    """One worker's search: its book of the study, its ensembles, its best trial."""

    def __init__(self, plan: Plan, book: Book, heartbeat: Heartbeat, bar: SearchBar | None) -> None:
        self.plan, self.book, self.heartbeat, self.bar = plan, book, heartbeat, bar
        self.slots = Slots(plan.slots, self._stream)
        self.best: tuple[int, float, nn.Module] | None = None  # this worker's best trial
        self.widest: dict[Family, Widths] = {}  # the carriers' hidden widths, per MLP family
        self.interrupts = KeptInterrupt()  # a Ctrl-C never lost on its way (see .writes)

    # -- the ensembles ---------------------------------------------------------------------

    def _stream(self, runs: list[TrialRun]) -> Iterator[dict[str, Any]]:
        plan = self.plan
        members = [(run, f) for run in runs for f in range(run.size)]
        rows = None if plan.folds is None else [plan.folds[run.folds[f] or 0][0]
                                                for run, f in members]  # fmt: skip
        stream = ensemble_stream(
            plan.train_data, [run.members[f] for run, f in members],
            [run.member_optimizers[f] for run, f in members], plan.loss_fn,
            batch_size=plan.batch_size, shuffle=plan.shuffle, rows=rows,
            generator=[g for run, f in members if (g := run.generators[f]) is not None] or None,
            hparams=[run.hparams(f) for run, f in members],
        )  # fmt: skip
        return pipe(stream, *plan.stages)

    def _generators(self, trial: Any) -> list[torch.Generator | None]:
        """Each member's shuffle generator, seeded from the trial and its fold (see search)."""
        plan = self.plan
        if not plan.shuffle:
            return [None] * plan.per_trial
        first = original_number(trial) * plan.per_trial
        return [
            torch.Generator(device=plan.device).manual_seed(plan.seed + first + f)
            for f in range(plan.per_trial)
        ]

    # -- asking ----------------------------------------------------------------------------

    def fill(self, prefer: Group | None) -> None:
        """Ask trials while a slot is free and the study's rules allow, and place them."""
        plan, book = self.plan, self.book
        while self.slots.free() >= plan.per_trial and book.may_ask():
            trial = book.ask()
            if trial is None:
                return
            run = self._build(trial)
            if run is not None:
                self.slots.place(run, prefer)

    def _build(self, trial: Any) -> TrialRun | None:
        plan = self.plan
        try:
            models, optimizers = build_members(
                plan.build, trial, plan.per_trial, plan.device, func=plan.func
            )
        except BuildError as error:  # only this trial fails; the search goes on
            exc = error.__cause__
            self.book.tell_fail(trial, f"build raised {type(exc).__name__}: {exc}", retry=False)
            _LOG.warning("search: trial %d failed in build: %r", trial.number, exc)
            return None
        except (TypeError, ValueError) as exc:  # build returned the wrong things: an error
            self.book.tell_fail(trial, str(exc), retry=False)
            raise
        folds: list[int | None] = list(range(plan.per_trial)) if plan.folds else [None]
        members, member_optimizers = list(models), list(optimizers)
        if plan.pad:  # an MLP trains padded to the widest of its family (see .carriers)
            carriers = [carrier_of(m, o, self.widest, plan.slots)
                        for m, o in zip(models, optimizers, strict=True)]  # fmt: skip
            if all(c is not None for c in carriers):
                members = [c.model for c in carriers if c is not None]
                member_optimizers = [c.optimizer for c in carriers if c is not None]
        return TrialRun(trial, models, optimizers, folds, self._generators(trial),
                        architecture(members[0], member_optimizers[0]), members,
                        member_optimizers)  # fmt: skip

    # -- telling ---------------------------------------------------------------------------

    def judge(self, group: Group, event: dict[str, Any]) -> list[tuple[int, TrialRun]]:
        """Record the epoch of every trial in ``group``; return the blocks whose trial ended."""
        plan, book = self.plan, self.book
        values = event.get(plan.key)
        if not isinstance(values, list) or len(values) != len(group.ensemble):
            keys = ", ".join(repr(k) for k in event)
            raise KeyError(
                f"{plan.func}: the events must hold {plan.key!r}, one value per member (add it "
                f"with stages=[augment(validation_loss(...))]); they have {keys}"
            )
        ended = []
        for block, run in enumerate(group.blocks):
            if run is None:
                continue
            if book.lost(run.trial):
                book.held.pop(run.number, None)
                ended.append((block, run))
                continue
            # the best epoch's weights are kept: the trained model handed back
            mean = run.record([float(values[k]) for k in group.members_of(block)],
                              minimize=book.minimize, keep=True)  # fmt: skip
            state = self._verdict(run, mean)
            if state is not None:
                self._finished(run, state)
                ended.append((block, run))
            elif book.lost(run.trial):  # failed as stale by another worker meanwhile
                ended.append((block, run))
        return ended

    def _verdict(self, run: TrialRun, mean: float) -> str | None:
        """Report ``mean``; the trial's end (COMPLETE, PRUNED, FAIL) or None if it goes on."""
        plan, book = self.plan, self.book
        last = run.steps >= plan.epochs
        if plan.prune and run.steps % plan.every == 0:
            if last:  # a trial that trained all its epochs is complete, never pruned
                book.report(run, mean, ask=False)
            elif book.report(run, mean):
                return book.tell_pruned(run)
        if last:
            if plan.save_dir is not None and run.best_state is not None:
                path = save_trial(plan.save_dir, run)
                book.attr(run.trial, "state_path", str(path))
            return book.tell_complete(run)
        return None

    def _finished(self, run: TrialRun, state: str) -> None:
        best = run.best_value
        if state == "COMPLETE" and best is not None and run.best_state is not None:
            mine = None if self.best is None else self.best[1]
            if better(best, mine, minimize=self.book.minimize):
                self.best = (run.number, best, best_copy(run))
        complete = self.book.states.COMPLETE
        log_finished(run, state, self.plan.epochs, read(best_text, self.book.study, complete))
        run.best_state = None  # kept by the file or the copy; free the memory

    def show(self, trials: list[Any] | None = None, *, force: bool = False) -> None:
        """Bring the bar up to date (when there is one and it is due), from ``trials`` if read."""
        if self.bar is None or not (force or self.bar.due()):
            return
        book = self.book
        trials = book.trials() if trials is None else trials
        counts = book.counts(trials)
        live = counts["trials_running"] + book.waiting(trials)
        finished = min(book.counted(trials), book.n_trials) - live
        self.bar.show(finished, counts, read(best_text, book.study, book.states.COMPLETE))

    # -- the loop --------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Train until the study holds ``n_trials``; one event per ensemble epoch."""
        book, slots = self.book, self.slots
        self.heartbeat.fail_stale(force=True)
        while True:
            self.fill(None)
            if not slots.groups:
                if self._wait_for_others():
                    continue
                return
            for group in list(slots.groups):
                self.interrupts.check()
                event = group.step()
                ended = self.judge(group, event)
                event["trial"] = [
                    math.nan if run is None else run.number
                    for run in group.blocks for _ in range(group.size)
                ]  # fmt: skip
                event["trial_step"] = [
                    0 if run is None else run.steps
                    for run in group.blocks for _ in range(group.size)
                ]  # fmt: skip
                for block, _ in ended:
                    group.end(block)
                trials = book.trials()  # one read of the study per event
                event.update(book.counts(trials))
                self.show(trials)
                yield event
                self.fill(group)
                self.heartbeat.fail_stale()
            slots.tidy()

    def _wait_for_others(self) -> bool:
        """With nothing to train, wait while other workers' trials run; True once one is ours.

        A trial of a worker that died is failed once its heartbeat is stale, and its retry is
        enqueued: this worker then trains it. Without a heartbeat there is nothing to wait for.
        """
        heartbeat, book = self.heartbeat, self.book
        while heartbeat.on:
            if book.waiting() and book.may_ask():
                return True
            if not heartbeat.others_running():
                return False
            heartbeat.fail_stale()
            self.show()
            time.sleep(min(heartbeat.interval or 1.0, 1.0))
            self.interrupts.check()
        return False

    def close(self) -> None:
        """Stop every ensemble, the heartbeat and the bar."""
        try:
            self.slots.close()
        finally:
            self.heartbeat.close()
            if self.bar is not None:
                self.show(force=True)
                self.bar.close()
