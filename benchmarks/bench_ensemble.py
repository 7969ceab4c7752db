"""Per-model cost of ``ensemble_stream`` against ``epoch_stream`` training one model.

The two workloads of ``bench_epoch_stream.py`` (tiny: X 20000x16, MLP 16-32-1, MSE, Adam, batch
32; small: X 50000x64, MLP 64-256-256-10, cross-entropy, Adam, batch 256). For each K, one
contender is ``epoch_stream`` training one model, the other ``ensemble_stream`` training K
models (seeds 0..K-1, Adam with learning rates spread over a decade). Each round starts both on
fresh models, runs one untimed warm-up epoch of each, then alternates single epochs (A B, B A,
...); the table shows the median seconds per epoch of each, the per-model ratio
``ensemble / K / single`` of the medians and the median of the per-pair ratios (the fairest
figure on a loaded machine), in wall time. Targets on one CPU thread: tiny at K=64 at most 1/25
per model, small at most 1.0 per model, K=1 at most 1.3x.

The ``5-fold x 8 lrs`` row is a cross-validated grid on the tiny workload: 40 members (8 Adam
learning rates x 5 folds), each training on its fold's rows (``rows=`` from ``kfold``, 16000 of
the 20000 rows), against ``epoch_stream`` training one model on one fold's rows. Target: at
most 1/20 per member.

The ``digits`` workload (``_digits_workload.py``) is the classification most users train: a
5-fold grid on scikit-learn's digits, MLP 64-32-10, validated every epoch. Its table gives, per
K, the epoch's wall and CPU milliseconds, the per-member ratio (paired, wall and CPU), the
epoch's matmul FLOPs, the limit (those FLOPs at this core's measured matmul rate) and the
distance to it (CPU time / limit). Targets: K=40 at most 1/16 per member, K=128 at most 1/25,
K=40 within 4x of the limit.

Run: ``uv run python benchmarks/bench_ensemble.py [--workload tiny|small|digits|all] [--ks ..]``;
a quick look: ``--epochs 2 --rounds 1``. ``--clip-grad-norm C`` and ``--train-metric`` turn
those step options on for both contenders, to time what they cost an ensemble.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import _digits_workload as digits
import torch
from bench_epoch_stream import WORKLOADS, Workload, make_data, train_metric
from torch import nn

from fitstream import ensemble_stream, epoch_stream, kfold


def make_models(w: Workload, k: int, device: str) -> list[nn.Module]:
    """``k`` MLPs of the workload, seeds 0..k-1."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(w.widths, w.widths[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(w.widths) - 2:
                layers.append(nn.ReLU())
        models.append(nn.Sequential(*layers).to(device))
    return models


def loss_fn(w: Workload) -> nn.Module:
    return nn.CrossEntropyLoss() if w.classification else nn.MSELoss()


def single(w: Workload, data: tuple[torch.Tensor, ...], device: str) -> Iterator[float]:
    """``epoch_stream`` on one model; yields the epoch's loss."""
    (model,) = make_models(w, 1, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    events = epoch_stream(data, model, opt, loss_fn(w), batch_size=w.batch_size, **STEP_OPTIONS)
    for event in events:
        yield event["train_loss"]


def together(w: Workload, data: tuple[torch.Tensor, ...], k: int, device: str) -> Iterator[float]:
    """``ensemble_stream`` on ``k`` models; yields member 0's epoch loss."""
    models = make_models(w, k, device)
    lrs = [1e-3 * 10 ** (i / max(k - 1, 1)) for i in range(k)]
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(models, lrs, strict=True)]
    events = ensemble_stream(
        data, models, opts, loss_fn(w), batch_size=w.batch_size, **STEP_OPTIONS
    )
    for event in events:
        yield event["train_loss"][0]


FOLDS, GRID_LRS = 5, 8
STEP_OPTIONS: dict[str, Any] = {}  # --clip-grad-norm, --train-metric: on both contenders


def grid_rows(n: int, device: str) -> list[torch.Tensor]:
    """Each member's training rows: fold ``f`` of a 5-fold split, for each of 8 settings."""
    splits = kfold(n, FOLDS, generator=torch.Generator().manual_seed(0))
    return [splits[f][0].to(device) for _ in range(GRID_LRS) for f in range(FOLDS)]


def single_fold(w: Workload, data: tuple[torch.Tensor, ...], device: str) -> Iterator[float]:
    """``epoch_stream`` on one model and one fold's training rows; yields the epoch's loss."""
    rows = grid_rows(data[0].shape[0], device)[0]
    yield from single(w, tuple(t[rows] for t in data), device)


def grid(w: Workload, data: tuple[torch.Tensor, ...], k: int, device: str) -> Iterator[float]:
    """``ensemble_stream`` of the 5-fold x 8-lr grid (``rows=``); yields member 0's loss."""
    models = make_models(w, k, device)
    lrs = [1e-4 * 10 ** (i / (GRID_LRS - 1) * 2) for i in range(GRID_LRS)]
    opts = [torch.optim.Adam(m.parameters(), lr=lrs[i // FOLDS]) for i, m in enumerate(models)]
    rows = grid_rows(data[0].shape[0], device)
    hparams = [{"fold": i % FOLDS} for i in range(k)]
    events = ensemble_stream(
        data, models, opts, loss_fn(w), batch_size=w.batch_size, rows=rows, hparams=hparams,
        **STEP_OPTIONS,
    )  # fmt: skip
    for event in events:
        yield event["train_loss"][0]


def timed(epochs: Iterator[Any]) -> tuple[float, float]:
    """Run one epoch; its wall and CPU seconds (each ends with a host sync)."""
    wall, cpu = time.perf_counter(), time.process_time()
    next(epochs)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(
    make: dict[str, Callable[[], Iterator[Any]]], k: int, epochs: int, rounds: int
) -> dict[str, float]:
    """Time ``make["single"]``'s and ``make["ensemble"]``'s streams in alternating epochs.

    Returns the median wall and CPU seconds per epoch of each, and the median per-pair ratio
    ``ensemble / k / single`` in wall and in CPU time.
    """
    times: dict[str, list[float]] = {
        f"{name} {clock}": [] for name in make for clock in ("wall", "cpu")
    }
    pairs: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(rounds):
        streams = {name: factory() for name, factory in make.items()}
        for stream in streams.values():
            next(stream)  # warm-up
        for e in range(epochs):
            pair = {}
            for name in ("single", "ensemble") if e % 2 == 0 else ("ensemble", "single"):
                pair[name] = timed(streams[name])
                times[f"{name} wall"].append(pair[name][0])
                times[f"{name} cpu"].append(pair[name][1])
            for i, clock in enumerate(("wall", "cpu")):
                pairs[clock].append(pair["ensemble"][i] / k / max(pair["single"][i], 1e-9))
        for stream in streams.values():
            stream.close()  # type: ignore[attr-defined]
    med = statistics.median
    return {
        **{key: med(values) for key, values in times.items()},
        **{f"paired {clock}": med(values) for clock, values in pairs.items()},
    }


def run(w: Workload, k: int, epochs: int, rounds: int, device: str, *, cv: bool = False) -> None:
    """Time both contenders for one K and print one row of the table."""
    data = tuple(t.to(device) for t in make_data(w))
    make: dict[str, Callable[[], Iterator[Any]]] = {
        "single": (lambda: single_fold(w, data, device)) if cv else lambda: single(w, data, device),
        "ensemble": (lambda: grid(w, data, k, device))
        if cv
        else lambda: together(w, data, k, device),
    }
    m = compare(make, k, epochs, rounds)
    one, ens, paired = m["single wall"], m["ensemble wall"], m["paired wall"]
    label = f"{w.name} {FOLDS}-fold x {GRID_LRS} lrs" if cv else w.name
    print(
        f"{label:<22} {k:>4} {one:>10.4f} {ens:>10.4f} {ens / k / one:>10.4f} "
        f"{paired:>10.4f}   1/{1 / paired:.1f}"
    )


def run_digits(ks: list[int], epochs: int, rounds: int) -> None:
    """The classification table: per K, epoch ms, per-member ratio, the limit and the distance."""
    rate = digits.matmul_rate()
    print(f"  digits: {digits.DESCRIPTION}")
    print(f"  this core's matmul rate: {rate / 1e9:.1f} GFLOP/s (1024^3 torch.mm, best of 5)")
    print(
        f"{'K':>4} {'single ms':>10} {'epoch ms':>9} {'epoch cpu':>10} {'per member':>11} "
        f"{'(cpu)':>9} {'MFLOP':>7} {'limit ms':>9} {'distance':>9}"
    )
    for k in ks:
        m = compare({"single": digits.single, "ensemble": lambda k=k: digits.ensemble(k)},
                    k, epochs, rounds)  # fmt: skip
        flops = digits.flops_per_epoch(k)
        limit = flops / rate
        print(
            f"{k:>4} {m['single wall'] * 1e3:>10.1f} {m['ensemble wall'] * 1e3:>9.1f} "
            f"{m['ensemble cpu'] * 1e3:>10.1f} {'1/' + format(1 / m['paired wall'], '.1f'):>11} "
            f"{'1/' + format(1 / m['paired cpu'], '.1f'):>9} {flops / 1e6:>7.0f} "
            f"{limit * 1e3:>9.1f} {m['ensemble cpu'] / limit:>8.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "digits", "all"], default="all")
    parser.add_argument(
        "--ks", default=None, help="comma-separated ensemble sizes (1,8,64; digits 1,8,40,128)"
    )
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-model rounds per K")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="where data and models live, e.g. cuda")
    parser.add_argument(
        "--no-grid", action="store_true", help="leave out the 5-fold x 8-lr row (tiny workload)"
    )
    parser.add_argument(
        "--clip-grad-norm", type=float, default=None, help="both clip each model's gradients"
    )
    parser.add_argument(
        "--train-metric", action="store_true", help="both compute a metric of every batch"
    )
    args = parser.parse_args()
    if args.clip_grad_norm is not None:
        STEP_OPTIONS["clip_grad_norm"] = args.clip_grad_norm
    if args.train_metric:
        STEP_OPTIONS["train_metrics"] = {"m": train_metric}
    torch.set_num_threads(args.threads)
    given = None if args.ks is None else [int(k) for k in args.ks.split(",")]
    ks = given or [1, 8, 64]
    chosen = [*WORKLOADS, "digits"] if args.workload == "all" else [args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{args.rounds} rounds x {args.epochs} alternating timed epochs; medians, wall time")
    if STEP_OPTIONS:
        print(f"both contenders with {sorted(STEP_OPTIONS)}")
    regression_or_small = [name for name in chosen if name in WORKLOADS]
    for name in regression_or_small:
        print(f"  {name}: {WORKLOADS[name].describe()}")
    if regression_or_small:
        print(
            f"{'load':<22} {'K':>4} {'single s':>10} {'ensemble s':>10} {'per model':>10} "
            f"{'paired':>10}   paired as 1/x"
        )
    for name in regression_or_small:
        for k in ks:
            run(WORKLOADS[name], k, args.epochs, args.rounds, args.device)
    if "tiny" in chosen and not args.no_grid:
        run(WORKLOADS["tiny"], FOLDS * GRID_LRS, args.epochs, args.rounds, args.device, cv=True)
    if "digits" in chosen:
        run_digits(given or [1, 8, 40, 128], args.epochs, args.rounds)


if __name__ == "__main__":
    main()
