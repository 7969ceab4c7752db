"""Per-epoch time of ``fit_stream`` versus a plain ``trainer.fit`` on the same module.

Run it with ``uv run python benchmarks/bench_fit_stream.py``. Three ways train the same small
MLP on synthetic data for a few epochs per run: ``trainer.fit`` as usual, ``trainer.fit`` in a
plain thread (``fit_stream`` trains in a worker thread, and on some machines that alone is a
few percent faster than the main thread), and ``fit_stream``. Each round runs all three in a
rotating order so that drift of a shared machine hits them alike. An epoch is timed from one
``on_train_epoch_start`` to the next (the last one to ``on_train_end``), so the event building
and the hand-over to the consumer at the end of each epoch are inside the measurement. The
first epoch of each run is left out (warm-up). The consumer does no work with the events.

It prints the median seconds per epoch of each way and the overhead of ``fit_stream`` in
percent against both baselines (from pooled medians, and as the median of per-round paired
ratios, which drift affects less); the target is at most 2 % against ``trainer.fit``.
Options: ``--rounds`` (default 8; each runs every way once), ``--epochs`` per run (default
6), ``--batches`` per epoch (default 40; about 0.2-0.5 s per epoch on one CPU core).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
import warnings
from typing import Any

import torch
from fitstream_lightning import fit_stream
from fitstream_lightning._epoch_events import EpochEvents
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
for _name in ("lightning.pytorch", "lightning.fabric"):  # no banners between the figures
    logging.getLogger(_name).setLevel(logging.WARNING)


class Regressor(LightningModule):
    """An MLP regression that logs its training loss once per epoch."""

    def __init__(self, width: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """MSE loss of the batch."""
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class EpochClock(Callback):
    """Records when each epoch starts and ends, and when training ends."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Mark the start of an epoch."""
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Mark the end of an epoch (before the stream's event is built)."""
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the last epoch."""
        self.starts.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        """Start-to-start time of each epoch but the first (which warms up)."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)][1:]

    def boundary_seconds(self) -> list[float]:
        """From each epoch's end hook to the next epoch's start: the epoch-boundary cost."""
        return [b - a for a, b in zip(self.ends, self.starts[1:], strict=False)][1:]


def make_trainer(epochs: int, batches: int, clock: EpochClock) -> Trainer:
    """A quiet CPU trainer without validation."""
    return Trainer(
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )


WAYS = ("trainer.fit", "fit in thread", "fit_stream")


def one_run(
    way: str, model: Regressor, loader: DataLoader[Any], epochs: int, batches: int
) -> EpochClock:
    """Train ``epochs`` epochs one way; the clock holds the epochs' times."""
    clock = EpochClock()
    trainer = make_trainer(epochs, batches, clock)
    if way == "fit_stream":
        for _ in fit_stream(trainer, model, train_dataloaders=loader):
            pass
    elif way == "fit in thread":
        worker = threading.Thread(
            target=trainer.fit, args=(model,), kwargs={"train_dataloaders": loader}
        )
        worker.start()
        worker.join()
    else:
        trainer.fit(model, train_dataloaders=loader)
    return clock


def overhead(numerator: float, denominator: float) -> str:
    """``numerator`` over ``denominator`` as a signed percentage."""
    return f"{100.0 * (numerator / denominator - 1.0):+.2f} %"


def per_batch_hook_seconds(model: Regressor, trainer: Trainer, n: int = 20_000) -> float:
    """Seconds the stream's per-batch hooks (abort check, loss sum) take per training batch."""
    hooks = EpochEvents()
    outputs = {"loss": torch.tensor(0.5)}
    start = time.perf_counter()
    for i in range(n):
        hooks.on_train_batch_start(trainer, model, None, i)
        hooks.on_train_batch_end(trainer, model, outputs, None, i)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="runs per way, order rotating")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run")
    parser.add_argument("--batches", type=int, default=40, help="training batches per epoch")
    args = parser.parse_args()
    rounds, epochs, batches = args.rounds, args.epochs, args.batches
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(batches * 128, 64)
    loader = DataLoader(TensorDataset(x, x[:, :1].clone()), batch_size=128)
    model = Regressor()
    epoch: dict[str, list[float]] = {way: [] for way in WAYS}
    boundary: dict[str, list[float]] = {way: [] for way in WAYS}
    paired: dict[str, list[float]] = {"trainer.fit": [], "fit in thread": []}
    print(
        f"torch {torch.__version__}, 1 thread; "
        f"{rounds} rounds x {epochs} epochs x {batches} batches"
    )
    for r in range(rounds):
        medians: dict[str, float] = {}
        for way in WAYS[r % 3 :] + WAYS[: r % 3]:
            clock = one_run(way, model, loader, epochs, batches)
            epoch[way] += clock.epoch_seconds()
            boundary[way] += clock.boundary_seconds()
            medians[way] = statistics.median(clock.epoch_seconds())
        for base, ratios in paired.items():
            ratios.append(medians["fit_stream"] / medians[base])
    per_epoch = {way: statistics.median(times) for way, times in epoch.items()}
    gap = {way: statistics.median(times) for way, times in boundary.items()}
    timed = len(epoch["fit_stream"])
    print(f"epochs timed per way: {timed} ({rounds} runs of {epochs}, first left out)")
    for way in WAYS:
        print(
            f"{way:<14}median {per_epoch[way]:.4f} s/epoch, epoch boundary {1e3 * gap[way]:.3f} ms"
        )
    streamed, plain = per_epoch["fit_stream"], per_epoch["trainer.fit"]
    for base, ratios in paired.items():
        print(
            f"overhead of fit_stream vs {base}: {overhead(streamed, per_epoch[base])} per epoch "
            f"(medians); paired per round {overhead(statistics.median(ratios), 1.0)} "
            f"(min {overhead(min(ratios), 1.0)}, max {overhead(max(ratios), 1.0)})"
        )
    print("target: <= 2 % per epoch against trainer.fit")
    extra = gap["fit_stream"] - gap["fit in thread"]
    print(
        f"epoch-boundary cost of fit_stream: {1e3 * extra:+.3f} ms per epoch "
        f"= {100.0 * extra / plain:+.3f} % of an epoch (less noisy)"
    )
    hook = per_batch_hook_seconds(model, make_trainer(1, batches, EpochClock()))
    print(
        f"per-batch hooks of fit_stream: {1e6 * hook:.1f} us per batch "
        f"= {100.0 * hook * batches / plain:.3f} % of an epoch of {batches} batches"
    )


if __name__ == "__main__":
    main()
