"""Sinks: consumers of a stream that keep, write or draw its events."""

from .collecting import collect, collect_jsonl, collect_pd
from .plotting import LivePlot, live_plot, plot_history
from .tensorboard import collect_tensorboard, log_tensorboard

__all__ = [
    "LivePlot",
    "collect",
    "collect_jsonl",
    "collect_pd",
    "collect_tensorboard",
    "live_plot",
    "log_tensorboard",
    "plot_history",
]
