"""How much does ``epoch_stream`` cost over the training loop a careful user writes by hand?

Both contenders train a fresh copy of the same model (same initial weights, same optimizer) on
the same data. The hand-written loop is the usual one: ``randperm`` once per epoch, index
slicing per batch, ``zero_grad(set_to_none=True)`` / ``backward`` / ``step``, the loss summed as
a tensor and read back with one ``.item()`` per epoch. Blocks of ``--epochs`` epochs alternate
A/B, B/A, ... for ``--rounds`` rounds after a warm-up, so load on the machine hits both alike.
The table shows the median seconds per epoch of each and their ratio (stream / hand).

Run: ``uv run python benchmarks/bench_epoch_stream.py [--workload tiny|small|all]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fitstream import epoch_stream


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: data size, MLP widths, batch size and the kind of loss."""

    name: str
    n_samples: int
    widths: tuple[int, ...]
    batch_size: int
    classification: bool

    def describe(self) -> str:
        """One line for the table's header."""
        net = "-".join(map(str, self.widths))
        loss = "cross-entropy" if self.classification else "MSE"
        return (
            f"X {self.n_samples}x{self.widths[0]}, MLP {net}, {loss}, Adam, batch {self.batch_size}"
        )


WORKLOADS = {
    "tiny": Workload("tiny", 20_000, (16, 32, 1), 32, classification=False),
    "small": Workload("small", 50_000, (64, 256, 256, 10), 256, classification=True),
}


def make_data(w: Workload) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    X = torch.randn(w.n_samples, w.widths[0], generator=g)
    if w.classification:
        y = torch.randint(0, w.widths[-1], (w.n_samples,), generator=g)
    else:
        y = X[:, :1] * 0.5 - X[:, 1:2] + 0.1 * torch.randn(w.n_samples, 1, generator=g)
    return X, y


def make_model(w: Workload) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(w.widths, w.widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(w.widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def hand_written(
    data: tuple[torch.Tensor, torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> Iterator[float]:
    """The careful inline loop, one epoch per ``next()``; yields the epoch's mean loss."""
    X, y = data
    n = X.shape[0]
    while True:
        model.train()
        perm = torch.randperm(n, device=X.device)
        total = torch.zeros((), device=X.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = X[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.detach() * xb.shape[0]
        yield total.item() / n


def stream(
    data: tuple[torch.Tensor, torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> Iterator[float]:
    """``epoch_stream`` under test, one epoch per ``next()``; yields the epoch's mean loss."""
    for event in epoch_stream(data, model, optimizer, loss_fn, batch_size=batch_size):
        yield event["train_loss"]


CONTENDERS = {"epoch_stream": stream, "hand-written": hand_written}


def time_block(
    name: str, w: Workload, X: torch.Tensor, y: torch.Tensor, epochs: int
) -> tuple[list[float], float]:
    """Train a fresh model for ``epochs`` epochs; return seconds per epoch and the last loss."""
    model, optimizer = make_model(w)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_fn = nn.CrossEntropyLoss() if w.classification else nn.MSELoss()
    epochs_iter = CONTENDERS[name]((X, y), model, optimizer, loss_fn, w.batch_size)
    times = []
    loss = float("nan")
    for _ in range(epochs):
        started = time.perf_counter()
        loss = next(epochs_iter)
        times.append(time.perf_counter() - started)
    epochs_iter.close()  # type: ignore[attr-defined]
    return times, loss


def run(w: Workload, epochs: int, rounds: int) -> tuple[float, float, float]:
    X, y = make_data(w)
    names = list(CONTENDERS)
    for name in names:  # warm-up: allocator, kernels, lazy initialisation
        time_block(name, w, X, y, 1)
    times: dict[str, list[float]] = {name: [] for name in names}
    losses: dict[str, float] = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            block, losses[name] = time_block(name, w, X, y, epochs)
            times[name] += block
    stream_s = statistics.median(times["epoch_stream"])
    hand_s = statistics.median(times["hand-written"])
    print(
        f"{w.name:<6} {stream_s:>14.4f} {hand_s:>14.4f} {stream_s / hand_s:>7.3f}"
        f"   last loss {losses['epoch_stream']:.4f} / {losses['hand-written']:.4f}"
    )
    return stream_s, hand_s, stream_s / hand_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed block")
    parser.add_argument("--rounds", type=int, default=10, help="A/B rounds per workload")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{args.rounds} rounds x {args.epochs} epochs per contender, alternating A/B then B/A")
    for name in chosen:
        print(f"  {name}: {WORKLOADS[name].describe()}")
    print(f"{'load':<6} {'epoch_stream s':>14} {'hand-written s':>14} {'ratio':>7}")
    for name in chosen:
        run(WORKLOADS[name], args.epochs, args.rounds)


if __name__ == "__main__":
    main()
