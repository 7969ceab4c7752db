"""A search you can trust: ``search`` against sequential ``study.optimize``, side by side.

Workload: scikit-learn's digits (1437 training rows, 360 validation rows, pixels / 16), an MLP
64-w-10 with w in {16, 32, 64} and Adam's lr in [1e-4, 1e-1] (log), cross-entropy, batch 32,
at most 30 epochs per trial, 64 trials, TPE (``constant_liar=True``), one CPU thread. Key:
``val_loss`` (minimized). For each pruner and each sampler seed, two runs on equal terms:

- (a) sequential: ``study.optimize`` with one ``epoch_stream`` per trial and ``prune(trial)``;
- (b) ``search(..., slots=16)``, one worker.

Per run the table gives: the best value, the median value of the COMPLETE trials, the epochs
trained, CPU and wall seconds. Then, over the seeds: the medians of each side, the seed-to-seed
spread (standard deviation) of (a), and the verdicts the search must meet:

- at equal trial count, (b)'s median best value and median finished value are within (a)'s
  spread of (a)'s or better;
- at equal CPU, (b) is better: (a) run again with (b)'s CPU time as its budget;
- (b) costs at most 1/4 of (a)'s CPU.

Pruners: ``median`` (``MedianPruner()``), ``hyperband`` (``HyperbandPruner(min_resource=1,
max_resource=30)``), ``sha`` (``SuccessiveHalvingPruner()``), ``sha1`` (its ``min_resource=1``).

Run: ``uv run python benchmarks/bench_search.py [--seeds 10] [--pruners median,hyperband,sha1]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from _digits_workload import digits
from torch import nn

from fitstream import augment, epoch_stream, pipe, prune, search, take, validation_loss

EPOCHS, TRIALS, SLOTS, BATCH = 30, 64, 16, 32
PRUNERS: dict[str, Callable[[], Any]] = {
    "median": optuna.pruners.MedianPruner,
    "sha": optuna.pruners.SuccessiveHalvingPruner,
    "sha1": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS),
}


def split_digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The digits in training and validation rows (1437 / 360)."""
    X, y = digits()
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train, val = order[:1437], order[1437:]
    return (X[train], y[train]), (X[val], y[val])


def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    width = trial.suggest_categorical("width", [16, 32, 64])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def new_study(pruner: str, seed: int) -> Any:
    """The study of one run, named for its pruner and seed.

    Hyperband puts a trial in the bracket that a hash of the study's name and the trial's number
    picks, and a study in memory is otherwise named at random: every run of the benchmark
    differed.
    """
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    name = f"bench-{pruner}-{seed}"
    return optuna.create_study(study_name=name, sampler=sampler, pruner=PRUNERS[pruner]())


class Epochs:
    """Counts the epochs trained (an augmenter that adds nothing)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        """Count the event's members' epochs."""
        self.count += len(event["train_loss"]) if isinstance(event["train_loss"], list) else 1
        return {}


def sequential(
    study: Any, train: Any, val: Any, *, cpu_budget: float | None = None
) -> dict[str, Any]:
    epochs = Epochs()
    started, cpu = time.perf_counter(), time.process_time()

    def objective(trial: Any) -> float:
        model, optimizer = build(trial)
        events = pipe(
            epoch_stream(train, model, optimizer, nn.CrossEntropyLoss(), batch_size=BATCH,
                         generator=torch.Generator().manual_seed(trial.number)),
            augment(validation_loss(val, nn.CrossEntropyLoss())), augment(epochs),
            prune(trial, "val_loss"), take(EPOCHS),
        )  # fmt: skip
        return min(ev["val_loss"] for ev in events)

    def budget(study: Any, trial: Any) -> None:
        if cpu_budget is not None and time.process_time() - cpu >= cpu_budget:
            study.stop()

    study.optimize(objective, n_trials=TRIALS, callbacks=[budget])
    return summary(study, epochs.count, time.process_time() - cpu, time.perf_counter() - started)


def batched(study: Any, train: Any, val: Any, slots: int = SLOTS) -> dict[str, Any]:
    epochs = Epochs()
    started, cpu = time.perf_counter(), time.process_time()
    stages = [augment(validation_loss(val, nn.CrossEntropyLoss())), augment(epochs)]
    search(study, build, train, nn.CrossEntropyLoss(), key="val_loss", epochs=EPOCHS,
           n_trials=TRIALS, slots=slots, batch_size=BATCH, stages=stages)  # fmt: skip
    return summary(study, epochs.count, time.process_time() - cpu, time.perf_counter() - started)


def summary(study: Any, epochs: int, cpu: float, wall: float) -> dict[str, Any]:
    states = optuna.trial.TrialState
    complete = [t.value for t in study.trials if t.state == states.COMPLETE]
    return {
        "best": study.best_value,
        "median": statistics.median(complete) if complete else math.nan,
        "complete": len(complete),
        "pruned": sum(t.state == states.PRUNED for t in study.trials),
        "epochs": epochs,
        "cpu": cpu,
        "wall": wall,
    }


def row(label: str, r: dict[str, Any]) -> str:
    return (
        f"| {label} | {r['best']:.4f} | {r['median']:.4f} | {r['complete']}/{r['pruned']} | "
        f"{r['epochs']} | {r['cpu']:.1f} | {r['wall']:.1f} |"
    )


def verdicts(name: str, a: list[dict[str, Any]], b: list[dict[str, Any]],
             equal_cpu: list[dict[str, Any]]) -> None:  # fmt: skip
    print(f"\nover {len(a)} seeds, {name}: medians (seed-to-seed std of sequential)")
    for metric in ("best", "median"):
        sa = [r[metric] for r in a]
        sb = [r[metric] for r in b]
        spread = statistics.stdev(sa) if len(sa) > 1 else math.nan
        ok = statistics.median(sb) <= statistics.median(sa) + spread
        verdict = "within spread or better" if ok else "WORSE"
        print(f"  {metric:<6} sequential {statistics.median(sa):.4f} (std {spread:.4f}), "
              f"search {statistics.median(sb):.4f}: {verdict}")  # fmt: skip
    same = [r["best"] for r in equal_cpu]
    better = sum(rb["best"] < rc["best"] for rb, rc in zip(b, equal_cpu, strict=True))
    print(f"  at equal CPU: sequential best {statistics.median(same):.4f} (median), search better "
          f"in {better} of {len(b)} seeds")  # fmt: skip
    search_best = statistics.median(r["best"] for r in b)
    print(f"    (search's median best {search_best:.4f})")
    ratios = [rb["cpu"] / ra["cpu"] for ra, rb in zip(a, b, strict=True)]
    walls = [rb["wall"] / ra["wall"] for ra, rb in zip(a, b, strict=True)]
    epochs = [rb["epochs"] / ra["epochs"] for ra, rb in zip(a, b, strict=True)]
    print(f"  CPU search/sequential: median 1/{1 / statistics.median(ratios):.1f} "
          f"(target at most 1/4); wall 1/{1 / statistics.median(walls):.1f}; epochs trained "
          f"x{statistics.median(epochs):.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pruners", default="median,hyperband,sha1", help=f"of {sorted(PRUNERS)}")
    parser.add_argument("--slots", type=int, default=SLOTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train, val = split_digits()
    print(f"torch {torch.__version__}, optuna {optuna.__version__}, 1 thread; digits MLP "
          f"64-{{16,32,64}}-10, {TRIALS} trials x <= {EPOCHS} epochs, TPE, "
          f"slots={args.slots}")  # fmt: skip
    warm = [sequential, batched]  # one untimed run of each: torch's and Optuna's first calls
    for run in warm:
        run(new_study("median", 99), train, val)
    for name in args.pruners.split(","):
        print(f"\n### {name}: {PRUNERS[name]()!r}\n")
        print("| seed, run | best | median complete | complete/pruned | epochs | CPU s | wall s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        a, b, c = [], [], []
        for seed in range(args.seeds):  # alternating: a, b, then a at b's CPU
            a.append(sequential(new_study(name, seed), train, val))
            print(row(f"{seed}, (a) sequential", a[-1]), flush=True)
            b.append(batched(new_study(name, seed), train, val, args.slots))
            print(row(f"{seed}, (b) search", b[-1]), flush=True)
            c.append(sequential(new_study(name, seed), train, val, cpu_budget=b[-1]["cpu"]))
            print(row(f"{seed}, (a) at (b)'s CPU", c[-1]), flush=True)
        verdicts(name, a, b, c)


if __name__ == "__main__":
    main()
