"""A widths x learning rates grid judged by 5-fold CV: one ``search`` against lone runs.

Workload: scikit-learn's digits (1797 rows, pixels / 16), MLP 64-w-10 with w in {16, 64} and
8 Adam learning rates from 1e-4 to 1e-1 (log-spaced), cross-entropy, batch 32, 20 epochs, 5
folds: 16 settings, 80 members. Every member is scored each epoch (accuracy) on its fold's
held-out rows. One CPU thread. Two ways to the same table:

- (a) 80 ``epoch_stream`` runs, one after the other, each on its fold's training rows;
- (b) one ``search(..., folds=kfold(...))`` over the study's ``GridSampler`` (``slots=80``,
  no pruning): the two widths in one ensemble padded to 64 (``pad=True``, the default), or
  in two ensembles of 40 (``pad=False``).

Rounds alternate (a), (b pad), (b no pad); the table gives the median CPU and wall seconds,
the ratio to (a), and the best setting each way found with its mean accuracy. Target: (b) at
most 1/6 of (a)'s CPU.

Run: ``uv run python benchmarks/bench_grid.py [--rounds 2] [--epochs 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from _digits_workload import accuracy, digits
from torch import nn

from fitstream import augment, epoch_stream, evaluate, kfold, search, summarize

WIDTHS = [16, 64]
LRS = [float(f"{1e-4 * 10 ** (3 * i / 7):.3g}") for i in range(8)]
FOLDS, BATCH = 5, 32


def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    width = trial.suggest_categorical("width", WIDTHS)
    lr = trial.suggest_categorical("lr", LRS)
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def lone_runs(data: tuple[torch.Tensor, torch.Tensor], splits: Any, epochs: int) -> str:
    """(a): each setting's folds one after the other; its best mean accuracy."""
    X, y = data
    best = (-1.0, "")
    for number, (width, lr) in enumerate((w, lr) for w in WIDTHS for lr in LRS):
        curves = []
        for f, (train, held) in enumerate(splits):
            trial = optuna.trial.FixedTrial({"width": width, "lr": lr}, number=number)
            model, optimizer = build(trial)
            order = torch.Generator().manual_seed(number * FOLDS + f)
            events = epoch_stream((X[train], y[train]), model, optimizer, nn.CrossEntropyLoss(),
                                  batch_size=BATCH, generator=order)  # fmt: skip
            score = evaluate((X[held], y[held]), metrics={"val_acc": accuracy})
            curves.append([score(next(events))["val_acc"] for _ in range(epochs)])
        mean = max(statistics.fmean(v) for v in zip(*curves, strict=True))
        best = max(best, (mean, f"width={width},lr={lr:g}"))
    return f"{best[1]} {best[0]:.4f}"


def grid(data: tuple[torch.Tensor, torch.Tensor], splits: Any, epochs: int, pad: bool) -> str:
    """(b): the grid as one study, every setting on every fold at once; its best setting."""
    sampler = optuna.samplers.GridSampler({"width": WIDTHS, "lr": LRS})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    stages = [augment(evaluate(data, metrics={"val_acc": accuracy}, folds=splits))]
    search(study, build, data, nn.CrossEntropyLoss(), key="val_acc", epochs=epochs,
           n_trials=len(WIDTHS) * len(LRS), slots=80, batch_size=BATCH, folds=splits,
           stages=stages, prune=False, pad=pad)  # fmt: skip
    row = summarize(study).iloc[0]
    return f"width={row['width']},lr={row['lr']:g} {row['mean']:.4f}"


def timed(run: Callable[[], str]) -> tuple[float, float, str]:
    wall, cpu = time.perf_counter(), time.process_time()
    found = run()
    return time.process_time() - cpu, time.perf_counter() - wall, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = digits()
    splits = kfold(len(data[0]), FOLDS, generator=torch.Generator().manual_seed(0))
    runs: dict[str, Callable[[], str]] = {
        "(a) 80 epoch_stream runs": lambda: lone_runs(data, splits, args.epochs),
        "(b) search, pad=True": lambda: grid(data, splits, args.epochs, pad=True),
        "(b) search, pad=False": lambda: grid(data, splits, args.epochs, pad=False),
    }
    grid(data, splits, 1, pad=True)  # warm-up, untimed
    print(f"torch {torch.__version__}, optuna {optuna.__version__}, 1 thread; digits, MLP "
          f"64-{{16,64}}-10, 8 lrs x 5 folds = 80 members, {args.epochs} epochs")  # fmt: skip
    results: dict[str, list[tuple[float, float, str]]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            results[name].append(timed(run))
    base = statistics.median(cpu for cpu, _, _ in results["(a) 80 epoch_stream runs"])
    print("| how | CPU s | wall s | CPU ratio | best setting, mean val_acc |")
    print("|---|---:|---:|---:|---|")
    for name, rows in results.items():
        cpu = statistics.median(c for c, _, _ in rows)
        wall = statistics.median(w for _, w, _ in rows)
        print(f"| {name} | {cpu:.1f} | {wall:.1f} | 1/{base / cpu:.1f} | {rows[-1][2]} |")


if __name__ == "__main__":
    main()
