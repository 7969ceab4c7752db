"""FitStream: a PyTorch training loop as an ordinary iterable of per-epoch events.

Sources (:func:`epoch_stream`, and ``fitstream_lightning.fit_stream``) yield one event dict per
epoch; stages (:func:`augment`, :func:`early_stop`, :func:`tap`, ...) transform the stream and are
composed with :func:`pipe`; sinks (:func:`collect`, :func:`collect_jsonl`, ...) consume it.
"""

from .evaluation import evaluate, validation_loss
from .events import Event, EventStream, Stage
from .experiments import (
    SearchResult,
    bootstrap,
    kfold,
    load_best,
    refit,
    search,
    search_events,
    summarize,
)
from .pipeline import pipe
from .sinks import (
    LivePlot,
    collect,
    collect_jsonl,
    collect_pd,
    collect_tensorboard,
    live_plot,
    log_tensorboard,
    plot_history,
)
from .sources import Ensemble, ensemble_stream, epoch_stream, iter_batches, steps_per_epoch
from .stages import (
    BestModel,
    augment,
    best_model,
    checkpoint,
    early_stop,
    ema,
    print_keys,
    progress,
    prune,
    reduce_lr_on_plateau,
    resumable,
    resume,
    stop_on_nonfinite,
    take,
    tap,
    tick,
)

__version__ = "0.7.0"
"""The version of the package, defined here only (the build reads it from this line)."""

__all__ = [
    "BestModel",
    "Ensemble",
    "Event",
    "EventStream",
    "LivePlot",
    "SearchResult",
    "Stage",
    "augment",
    "best_model",
    "bootstrap",
    "checkpoint",
    "collect",
    "collect_jsonl",
    "collect_pd",
    "collect_tensorboard",
    "early_stop",
    "ema",
    "ensemble_stream",
    "epoch_stream",
    "evaluate",
    "iter_batches",
    "kfold",
    "live_plot",
    "load_best",
    "log_tensorboard",
    "pipe",
    "plot_history",
    "print_keys",
    "progress",
    "prune",
    "reduce_lr_on_plateau",
    "refit",
    "resumable",
    "resume",
    "search",
    "search_events",
    "steps_per_epoch",
    "stop_on_nonfinite",
    "summarize",
    "take",
    "tap",
    "tick",
    "validation_loss",
]
