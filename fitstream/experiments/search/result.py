"""What :func:`~fitstream.search` gives back: :class:`SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` gives back: the study, and the best model this worker trained.

    Attributes:
        study: The study, for ``study.best_trial``, ``study.trials_dataframe()`` and
            :func:`~fitstream.summarize`.
        best_model: The best trial this worker completed, as a model holding its weights at
            its best epoch (with ``folds``, its fold models as one
            :class:`~fitstream.Ensemble`); ``None`` if it completed none. The study's best
            trial may be another worker's: :func:`~fitstream.load_best` loads it in any
            process from the states saved with ``save_dir``.
        best_model_trial: The number of the trial ``best_model`` comes from.
    """

    study: Any
    best_model: nn.Module | None
    best_model_trial: int | None

    @property
    def best_trial(self) -> Any:
        """The study's best trial (of every worker), as ``study.best_trial``."""
        return self.study.best_trial

    @property
    def best_value(self) -> float:
        """The study's best value."""
        return float(self.study.best_value)

    @property
    def best_params(self) -> dict[str, Any]:
        """The study's best trial's parameters."""
        return dict(self.study.best_params)
