"""What a person sees of a search: one bar over its trials, and one log line per finished trial.

The bar (``search(..., progress=True)``, drawn by tqdm, the extra ``fitstream[progress]``)
counts the study's finished trials out of ``n_trials``, of every worker, and shows how many are
complete, pruned and running, and the best value so far with its trial (with folds, the best
setting's mean ± its standard error over the folds). Each finished trial also logs one ``INFO``
line on the ``fitstream.search`` logger, as Optuna logs its trials: its number, state, value,
epochs and parameters. Python's logging prints ``INFO`` only where the program configured it,
so with the bar off nothing is printed.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import IO, Any

from ..._internal.optional import require
from ...stages._progress_layout import widen_to_fit
from ...stages._progress_layout import width as _width
from .trials import TrialRun

__all__ = ["SearchBar", "finished_line", "log_finished"]

_LOG = logging.getLogger("fitstream.search")


def _value(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4g}"


def _sem(values: Any) -> float | None:
    """The standard error of the mean of ``values`` (``ddof=1``); None below two values."""
    if not isinstance(values, list) or len(values) < 2:
        return None
    finite = [float(v) for v in values if isinstance(v, int | float)]
    if len(finite) != len(values):
        return None
    mean = math.fsum(finite) / len(finite)
    var = math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return math.sqrt(var / len(finite))


def best_text(study: Any, complete: Any) -> str:
    """``best=0.0715 (trial 9)``, or with folds ``best=0.9772±0.0018 (trial 9)``; '' if none."""
    trials = study.get_trials(deepcopy=False, states=(complete,))
    if not trials:
        return ""
    best = study.best_trial
    sem = _sem(best.user_attrs.get("fold_values"))
    spread = "" if sem is None else f"±{sem:.2g}"
    return f"best={_value(best.value)}{spread} (trial {best.number})"


def finished_line(run: TrialRun, state: str, epochs: int, best: str) -> str:
    """The log line of a finished trial.

    Example:
        >>> from types import SimpleNamespace
        >>> run = TrialRun(SimpleNamespace(number=4, params={"lr": 0.01}), [], [], [None], [],
        ...                "k", steps=3, curve=[0.5, 0.3, 0.4], best_at=1)
        >>> print(finished_line(run, "PRUNED", 30, "best=0.2 (trial 1)"))
        Trial 4 PRUNED after 3 of 30 epochs, value 0.3 at epoch 2; params {'lr': 0.01}.
        best=0.2 (trial 1)
    """
    value = "" if run.best_at is None else f", value {_value(run.best_value)}"
    value += "" if run.best_at is None else f" at epoch {run.best_step}"
    tail = f". {best}" if best else ""
    return (
        f"Trial {run.number} {state} after {run.steps} of {epochs} epochs{value}; "
        f"params {dict(run.trial.params)}{tail}"
    )


def log_finished(run: TrialRun, state: str, epochs: int, best: str) -> None:
    """Log one finished trial on ``fitstream.search`` at INFO."""
    if _LOG.isEnabledFor(logging.INFO):
        _LOG.info("%s", finished_line(run, state, epochs, best))


class SearchBar:
    """The search's bar: finished trials out of ``n_trials``, with the counts and the best."""

    def __init__(self, n_trials: int, *, file: IO[str] | None = None) -> None:
        tqdm = require("tqdm.auto", "progress", feature="search(progress=True)").tqdm
        out = file if file is not None else sys.stderr
        kind = type("SearchBar", (tqdm,), {"monitor_interval": 0})  # no monitor thread
        layout = "{desc} {n_fmt}/{total_fmt} trials{postfix} |{bar}| {elapsed}<{remaining}"
        shape = _width(out)
        # a log file's line, which grows rather than be cut; a terminal's is tqdm's to cut
        self.line: int | None = shape.get("ncols")
        self.bar = kind(total=n_trials, desc="search", file=out, leave=True, bar_format=layout,
                        **shape)  # fmt: skip
        self.shown = -math.inf  # when it was last drawn (time.monotonic)

    def due(self) -> bool:
        """Whether the bar may be drawn again: at most once per tqdm's ``mininterval``.

        A search yields many epochs a second; reading the study and redrawing at each filled a
        log with copies of the same line.
        """
        return time.monotonic() - self.shown >= float(self.bar.mininterval)

    def show(self, finished: int, counts: dict[str, int], best: str) -> None:
        """Move the bar to ``finished`` trials and show the counts and the best."""
        bar = self.bar
        bar.n = min(finished, bar.total)
        text = (
            f"done={counts['trials_done']} pruned={counts['trials_pruned']} "
            f"running={counts['trials_running']}"
        )
        bar.set_postfix_str(f"{text} {best}".strip(), refresh=False)
        if self.line is not None:
            self.line = widen_to_fit(bar, self.line, least_bar=1)
        bar.refresh()
        self.shown = time.monotonic()

    def close(self) -> None:
        """Close the bar (its last line stays)."""
        self.bar.close()
