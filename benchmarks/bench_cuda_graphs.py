"""GPU check of ``cuda_graphs=True``: the eager loop's numbers, and the speed.

Needs CUDA (without it, exits with status 1 and a message). For each workload (``tiny`` and
``small``, as in ``bench_epoch_stream.py``):

1. **Equivalence** (exits with status 1 if any fails): ``epoch_stream`` with and without
   ``cuda_graphs`` from the same initial weights and the same row order, for SGD (momentum),
   Adam and AdamW, shuffled and not, on the data cut so that the last batch is short: the
   ``train_loss`` of each of ``--check-epochs`` epochs and the final weights agree within
   relative ``--rtol`` (1e-4). The same for ``ensemble_stream`` with 4 members of different
   learning rates, member by member.
2. **Speed**: median seconds per epoch of the careful hand loop, ``epoch_stream``,
   ``epoch_stream(cuda_graphs=True)`` and ``ensemble_stream`` of K=64 models with and without
   graphs (also per model). Each round builds fresh
   contenders, runs one untimed epoch of each (it includes the capture), then alternates
   single epochs, so load on the machine hits all alike. ``x hand`` is the time per model
   over the hand loop's (lower is faster).

Run: ``uv run python benchmarks/bench_cuda_graphs.py [--workload tiny|small|all]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn

from fitstream import ensemble_stream, epoch_stream


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: data size, MLP widths, batch size and the kind of loss."""

    name: str
    n_samples: int
    widths: tuple[int, ...]
    batch_size: int
    classification: bool


WORKLOADS = {
    "tiny": Workload("tiny", 20_000, (16, 32, 1), 32, classification=False),
    "small": Workload("small", 50_000, (64, 256, 256, 10), 256, classification=True),
}
OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "SGD(momentum)": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2),
}
ORDER_SEED = 7


def make_data(w: Workload, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    X = torch.randn(w.n_samples, w.widths[0], generator=g)
    if w.classification:
        y = torch.randint(0, w.widths[-1], (w.n_samples,), generator=g)
    else:
        y = X[:, :1] * 0.5 - X[:, 1:2] + 0.1 * torch.randn(w.n_samples, 1, generator=g)
    rows = slice(0, n)
    return X[rows].cuda(), y[rows].cuda()


def make_model(w: Workload, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(w.widths, w.widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(w.widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).cuda()


def loss_fn_for(w: Workload) -> nn.Module:
    return nn.CrossEntropyLoss() if w.classification else nn.MSELoss()


def order() -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(ORDER_SEED)


# --- equivalence ---------------------------------------------------------------------------


def check_equivalence(w: Workload, epochs: int, rtol: float) -> bool:
    n = w.n_samples - w.batch_size // 2  # leaves a short last batch
    data = make_data(w, n)
    ok = True
    for name, make_opt in OPTIMIZERS.items():
        for shuffle in (True, False):
            runs, models = [], []
            for graphs in (False, True):
                model = make_model(w)
                stream = epoch_stream(
                    data,
                    model,
                    make_opt(model.parameters()),
                    loss_fn_for(w),
                    batch_size=w.batch_size,
                    shuffle=shuffle,
                    generator=order(),
                    cuda_graphs=graphs,
                )
                runs.append([ev["train_loss"] for ev in islice(stream, epochs)])
                models.append(model)
            loss_rel = max(abs(a - b) / abs(a) for a, b in zip(*runs, strict=True))
            weight_rel = max(
                ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
                for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True)
            )
            good = loss_rel <= rtol and weight_rel <= rtol
            ok &= good
            print(
                f"  {'ok ' if good else 'BAD'} {name:<14} shuffle={shuffle!s:<5} "
                f"losses rel {loss_rel:.1e}, weights rel {weight_rel:.1e} "
                f"(last loss {runs[0][-1]:.5f} / {runs[1][-1]:.5f})"
            )
    return ok


def _rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


def check_ensemble_equivalence(w: Workload, epochs: int, rtol: float, k: int = 4) -> bool:
    n = w.n_samples - w.batch_size // 2  # leaves a short last batch
    data = make_data(w, n)
    ok = True
    for name, make_opt in OPTIMIZERS.items():
        runs, members = [], []
        for graphs in (False, True):
            models = [make_model(w, seed) for seed in range(k)]
            opts = [make_opt(m.parameters()) for m in models]
            for j, opt in enumerate(opts):
                opt.param_groups[0]["lr"] *= 0.5 + j  # a different learning rate per member
            stream = ensemble_stream(
                data,
                models,
                opts,
                loss_fn_for(w),
                batch_size=w.batch_size,
                generator=order(),
                cuda_graphs=graphs,
            )
            runs.append([ev["train_loss"] for ev in islice(stream, epochs)])
            members.append(models)
        loss_rel = max(_rel(a, b) for a, b in zip(*runs, strict=True))
        weight_rel = max(
            ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
            for ma, mb in zip(*members, strict=True)
            for a, b in zip(ma.parameters(), mb.parameters(), strict=True)
        )
        good = loss_rel <= rtol and weight_rel <= rtol
        ok &= good
        print(
            f"  {'ok ' if good else 'BAD'} ensemble K={k} {name:<14} "
            f"losses rel {loss_rel:.1e}, weights rel {weight_rel:.1e} (every member)"
        )
    return ok


# --- speed ---------------------------------------------------------------------------------


def hand_loop(w: Workload, data: tuple[torch.Tensor, torch.Tensor]) -> Iterator[float]:
    """The careful inline loop, one epoch per ``next()``."""
    model = make_model(w)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = loss_fn_for(w)
    X, y = data
    n, bs, gen = X.shape[0], w.batch_size, order()
    while True:
        model.train()
        perm = torch.randperm(n, device=X.device, generator=gen)
        Xs, ys = X[perm], y[perm]
        total = torch.zeros((), device=X.device)
        for start in range(0, n, bs):
            xb, yb = Xs[start : start + bs], ys[start : start + bs]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.detach() * xb.shape[0]
        yield total.item() / n


def stream(w: Workload, data: tuple[torch.Tensor, torch.Tensor], graphs: bool) -> Iterator[Any]:
    model = make_model(w)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return epoch_stream(
        data,
        model,
        optimizer,
        loss_fn_for(w),
        batch_size=w.batch_size,
        generator=order(),
        cuda_graphs=graphs,
    )


def ensemble(
    w: Workload, data: tuple[torch.Tensor, torch.Tensor], graphs: bool, k: int
) -> Iterator[Any]:
    models = [make_model(w, seed) for seed in range(k)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    return ensemble_stream(
        data,
        models,
        optimizers,
        loss_fn_for(w),
        batch_size=w.batch_size,
        generator=order(),
        cuda_graphs=graphs,
    )


def contenders(
    w: Workload, data: tuple[torch.Tensor, torch.Tensor], k: int
) -> dict[str, tuple[Iterator[Any], int]]:
    made: dict[str, tuple[Iterator[Any], int]] = {
        "hand loop": (hand_loop(w, data), 1),
        "epoch_stream": (stream(w, data, graphs=False), 1),
        "epoch_stream(cuda_graphs=True)": (stream(w, data, graphs=True), 1),
    }
    for graphs in (False, True):
        name = f"ensemble_stream K={k}" + (" (cuda_graphs=True)" if graphs else "")
        made[name] = (ensemble(w, data, graphs, k), k)
    return made


def timed(epochs: Iterator[Any]) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    next(epochs)  # ends with .item(): the device has finished the epoch
    torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(w: Workload, rounds: int, epochs: int, k: int) -> None:
    data = make_data(w)
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        live = contenders(w, data, k)
        running = {}
        for name, made in live.items():
            running[name], sizes[name] = made
            next(running[name])  # untimed: allocator, optimizer state, capture
        for e in range(epochs):
            names = list(running) if e % 2 == 0 else list(reversed(running))
            for name in names:
                times.setdefault(name, []).append(timed(running[name]))
    hand = statistics.median(times["hand loop"])
    print(f"  {'contender':<44} {'s/epoch':>9} {'s/epoch/model':>14} {'x hand':>8}")
    for name in live:
        med = statistics.median(times[name])
        per_model = med / sizes[name]
        print(f"  {name:<44} {med:>9.4f} {per_model:>14.6f} {per_model / hand:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--check-epochs", type=int, default=5)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--k", type=int, default=64, help="ensemble size")
    parser.add_argument("--skip-check", action="store_true", help="only measure the speed")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda_graphs.py needs a CUDA GPU: cuda_graphs=True replays CUDA graphs")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    chosen = list(WORKLOADS) if args.workload == "all" else [args.workload]
    ok = True
    for name in chosen:
        w = WORKLOADS[name]
        net = "-".join(map(str, w.widths))
        print(f"\n{name}: X {w.n_samples}x{w.widths[0]}, MLP {net}, batch {w.batch_size}")
        if not args.skip_check:
            print(f" equivalence over {args.check_epochs} epochs (rtol {args.rtol}):")
            ok &= check_equivalence(w, args.check_epochs, args.rtol)
            ok &= check_ensemble_equivalence(w, args.check_epochs, args.rtol)
        print(f" speed, Adam, median of {args.rounds} x {args.epochs} epochs:")
        measure(w, args.rounds, args.epochs, args.k)
    if not ok:
        sys.exit("\nan equivalence check FAILED (see BAD above)")


if __name__ == "__main__":
    main()
