"""Experiments: many runs as the members of one ensemble, and their results by setting.

:func:`kfold` and :func:`bootstrap` make the members' rows (``ensemble_stream(rows=...)``,
``validation_loss(rows=...)``); :func:`summarize` groups the members of a history by their
hyperparameters and compares the groups' mean curves; :func:`search` trains an Optuna study's
trials K at a time as the slots of an ensemble.
"""

from .refit import refit
from .search import SearchResult, load_best, search, search_events
from .splitters import bootstrap, kfold
from .summary import summarize

__all__ = [
    "SearchResult",
    "bootstrap",
    "kfold",
    "load_best",
    "refit",
    "search",
    "search_events",
    "summarize",
]
