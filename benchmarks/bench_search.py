"""Wall time of an Optuna search: trials one by one with ``epoch_stream``, or K at a time.

Tiny workload (X 20000x16, MLP 16-w-1 with w in {16, 32}, Adam, batch 32, MSE), 64 trials of
10 epochs, the same seeded sampler on both sides, validation on 4000 held-out rows:

- (a) ``study.optimize`` with one ``epoch_stream`` per trial, one after another;
- (b) ``search(..., slots=16)`` and ``slots=32``.

Without pruning the work is equal: the table shows each side's wall time and (b)/(a). Target:
(b) at most 1/10 of (a). Then each side runs with Optuna's MedianPruner for as long as (a)
took to the time of the fastest (b), and says how many trials it finished in that budget.

Run: ``uv run python benchmarks/bench_search.py [--trials 64] [--epochs 10] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import optuna
import torch
from torch import nn

from fitstream import augment, epoch_stream, pipe, prune, search, take, validation_loss

N, D, VAL = 20000, 16, 4000


def data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N + VAL, D, generator=g)
    y = X[:, :1] * 0.5 - X[:, 1:2] + 0.1 * torch.randn(N + VAL, 1, generator=g)
    return (X[:N], y[:N]), (X[N:], y[N:])


def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    width = trial.suggest_categorical("width", [16, 32])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(D, width), nn.ReLU(), nn.Linear(width, 1))
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def study(pruner: Any) -> Any:
    return optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner)


def one_by_one(
    s: Any, train: Any, val: Any, *, trials: int, epochs: int, pruning: bool, budget: float
) -> float:
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        model, optimizer = build(trial)
        stages = [augment(validation_loss(val, nn.MSELoss()))]
        if pruning:
            stages.append(prune(trial, "val_loss"))
        events = pipe(epoch_stream(train, model, optimizer, nn.MSELoss(), batch_size=32),
                      *stages, take(epochs))  # fmt: skip
        return min(ev["val_loss"] for ev in events)

    s.optimize(objective, n_trials=trials, timeout=budget)
    return time.perf_counter() - started


def batched(
    s: Any, train: Any, val: Any, *, trials: int, epochs: int, slots: int, pruning: bool
) -> float:
    started = time.perf_counter()
    search(s, build, train, nn.MSELoss(), key="val_loss", epochs=epochs, n_trials=trials,
           slots=slots, batch_size=32, prune=pruning,
           stages=[augment(validation_loss(val, nn.MSELoss()))])  # fmt: skip
    return time.perf_counter() - started


def finished(s: Any) -> str:
    states = optuna.trial.TrialState
    done = sum(t.state == states.COMPLETE for t in s.trials)
    pruned = sum(t.state == states.PRUNED for t in s.trials)
    return f"{done} complete, {pruned} pruned, best {s.best_value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train, val = data()
    print(f"torch {torch.__version__}, optuna {optuna.__version__}, {args.threads} thread(s)")
    print(f"{args.trials} trials x {args.epochs} epochs, tiny workload, MLP 16-{{16,32}}-1, Adam")
    nop = optuna.pruners.NopPruner
    kw = {"trials": args.trials, "epochs": args.epochs}
    a = one_by_one(study(nop()), train, val, pruning=False, budget=1e9, **kw)
    print(f"{'(a) study.optimize, epoch_stream per trial':<44} {a:8.1f} s   1")
    times = {}
    for slots in (16, 32):
        times[slots] = batched(study(nop()), train, val, slots=slots, pruning=False, **kw)
        label = f"(b) search(slots={slots})"
        print(f"{label:<44} {times[slots]:8.1f} s   1/{a / times[slots]:.1f}")
    budget = min(times.values())
    print(f"with MedianPruner, in the time of the fastest (b), {budget:.1f} s:")
    s = study(optuna.pruners.MedianPruner(n_warmup_steps=2))
    one_by_one(s, train, val, pruning=True, budget=budget, **kw)
    print(f"  (a) study.optimize: {finished(s)}")
    s = study(optuna.pruners.MedianPruner(n_warmup_steps=2))
    spent = batched(s, train, val, slots=min(times, key=times.__getitem__), pruning=True, **kw)
    print(f"  (b) search: {finished(s)} (all {args.trials} in {spent:.1f} s)")


if __name__ == "__main__":
    main()
