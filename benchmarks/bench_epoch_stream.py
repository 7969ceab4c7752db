"""How much does ``epoch_stream`` cost over the training loop a careful user writes by hand?

Both contenders train a fresh copy of the same model (same initial weights, same optimizer) on
the same data. The hand-written loop is the usual one: ``randperm`` once per epoch, index
slicing per batch, ``zero_grad(set_to_none=True)`` / ``backward`` / ``step``, the loss summed as
a tensor and read back with one ``.item()`` per epoch. Each of ``--rounds`` rounds starts both
on fresh identical models, warms them up for one epoch, then alternates single epochs (A B,
B A, ...) for ``--epochs`` epochs each, so load on the machine hits both alike. The table shows
the median seconds per epoch of each and their ratio (stream / hand), and the median of the
ratios of adjacent A/B pairs (the fairest figure when the load drifts), in wall time; then the
same in CPU time of this process (steadier than wall time on a busy machine when torch runs one
thread, ``--threads 1``; with more threads it also counts their spinning). Both contenders
draw their shuffles from the global RNG in turn, so their last losses agree only roughly.

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

# --clip-grad-norm: both contenders clip; --train-metric: both compute a metric of the batches
OPTIONS: dict[str, float | None] = {"clip": None, "metric": None}


def train_metric(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The metric ``--train-metric`` computes on each training batch: accuracy, or MAE."""
    if pred.dim() == 2 and pred.shape[1] > 1:
        return (pred.argmax(dim=1) == labels).float().mean()
    return (pred - labels).abs().mean()


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


def make_model(w: Workload, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(w.widths, w.widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(w.widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(device)
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
        measured = torch.zeros((), dtype=torch.float64, device=X.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = X[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            pred = model(xb)
            loss = loss_fn(pred, yb)
            loss.backward()  # type: ignore[no-untyped-call]
            if OPTIONS["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIONS["clip"])
            optimizer.step()
            total += loss.detach() * xb.shape[0]
            if OPTIONS["metric"]:
                with torch.no_grad():
                    measured += train_metric(pred.detach(), yb).double() * xb.shape[0]
        if OPTIONS["metric"]:  # one read-back for both, as the stream does
            yield torch.stack([total.double(), measured]).tolist()[0] / n
        else:
            yield total.item() / n


def stream(
    data: tuple[torch.Tensor, torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> Iterator[float]:
    """``epoch_stream`` under test, one epoch per ``next()``; yields the epoch's mean loss."""
    metrics = {"m": train_metric} if OPTIONS["metric"] else None
    events = epoch_stream(
        data, model, optimizer, loss_fn, batch_size=batch_size, clip_grad_norm=OPTIONS["clip"],
        train_metrics=metrics,
    )  # fmt: skip
    for event in events:
        yield event["train_loss"]


CONTENDERS = {"epoch_stream": stream, "hand-written": hand_written}


def start(name: str, w: Workload, data: tuple[torch.Tensor, torch.Tensor]) -> Iterator[float]:
    """A contender's epochs on a fresh model (the same initial weights for every call)."""
    model, optimizer = make_model(w, data[0].device)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_fn = nn.CrossEntropyLoss() if w.classification else nn.MSELoss()
    return CONTENDERS[name](data, model, optimizer, loss_fn, w.batch_size)


def timed_epoch(epochs: Iterator[float]) -> tuple[float, float, float]:
    """Run one epoch; return its wall seconds, CPU seconds and mean loss."""
    wall, cpu = time.perf_counter(), time.process_time()
    loss = next(epochs)  # ends with .item(): the device has finished the epoch
    return time.perf_counter() - wall, time.process_time() - cpu, loss


def run(w: Workload, epochs: int, rounds: int, device: str) -> None:
    """Time both contenders on one workload and print one row of the table.

    Each round starts both contenders on fresh, identical models, runs one untimed warm-up
    epoch of each, then alternates single epochs (A B, B A, A B, ...) so that changes in the
    machine's load fall on both alike. Besides the medians of each, the row shows the median
    of the per-pair ratios, which is the fairest figure when the load drifts.
    """
    data = tuple(t.to(device) for t in make_data(w))
    assert len(data) == 2
    a, b = "epoch_stream", "hand-written"
    wall: dict[str, list[float]] = {a: [], b: []}
    cpu: dict[str, list[float]] = {a: [], b: []}
    pairs: list[float] = []
    losses: dict[str, float] = {}
    for _ in range(rounds):
        streams = {name: start(name, w, data) for name in (a, b)}
        for epochs_iter in streams.values():
            next(epochs_iter)  # warm-up: allocator, optimizer state, lazy initialisation
        for e in range(epochs):
            pair = {}
            for name in (a, b) if e % 2 == 0 else (b, a):
                pair[name], spent, losses[name] = timed_epoch(streams[name])
                wall[name].append(pair[name])
                cpu[name].append(spent)
            pairs.append(pair[a] / pair[b])
        for epochs_iter in streams.values():
            epochs_iter.close()  # type: ignore[attr-defined]
    med = statistics.median
    print(
        f"{w.name:<6} {med(wall[a]):>9.4f} {med(wall[b]):>9.4f} {med(wall[a]) / med(wall[b]):>7.3f}"
        f" {med(pairs):>7.3f}   {med(cpu[a]):>9.4f} {med(cpu[b]):>9.4f}"
        f" {med(cpu[a]) / med(cpu[b]):>7.3f}   {losses[a]:.4f} / {losses[b]:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-model rounds per workload")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine",
    )
    parser.add_argument("--device", default="cpu", help="where data and model live, e.g. cuda")
    parser.add_argument(
        "--clip-grad-norm",
        type=float,
        default=None,
        help="both clip the gradients' norm (the stream by clip_grad_norm=, the hand loop by "
        "torch.nn.utils.clip_grad_norm_), to time the option's own cost",
    )
    parser.add_argument(
        "--train-metric",
        action="store_true",
        help="both compute a metric of every training batch (the stream by train_metrics=), "
        "to time the option's own cost",
    )
    args = parser.parse_args()
    OPTIONS["clip"] = args.clip_grad_norm
    OPTIONS["metric"] = 1.0 if args.train_metric else None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if OPTIONS["clip"] is not None:
        print(f"both clip the gradients' norm to {OPTIONS['clip']}")
    if OPTIONS["metric"]:
        print("both compute a train metric of every batch")
    print(
        f"{args.rounds} rounds on fresh models x {args.epochs} timed epochs per contender, "
        "alternating epochs A B, B A, ...; median seconds per epoch"
    )
    for name in chosen:
        print(f"  {name}: {WORKLOADS[name].describe()}")
    print(
        f"{'':<6} {'wall':-^35}   {'CPU':-^27}   last loss\n"
        f"{'load':<6} {'stream':>9} {'hand':>9} {'ratio':>7} {'paired':>7}   {'stream':>9} "
        f"{'hand':>9} {'ratio':>7}   stream / hand"
    )
    for name in chosen:
        run(WORKLOADS[name], args.epochs, args.rounds, args.device)


if __name__ == "__main__":
    main()
