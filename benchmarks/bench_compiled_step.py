"""What ``torch.compile`` would give the digits grid's ensemble, and what it would cost.

The ``digits`` workload of ``bench_ensemble.py`` (``_digits_workload.py``: K members of MLP
64-32-10 on a 5-fold split of scikit-learn's digits, cross-entropy, Adam with a rate per member,
batch 32, held-out accuracy every epoch). This script writes that ensemble's whole training
step as one function of stacked tensors (forward, the gradients written by hand as
``ensemble_stream`` writes them, Adam with each member's rate) and its validation as another,
and runs them three ways in alternating epochs against the library:

- ``library``: ``ensemble_stream`` with ``evaluate(..., folds=)``, as ``bench_ensemble.py``
  times it;
- ``eager``: the two functions as written, one operator at a time;
- ``compiled``: the same functions under ``torch.compile(fullgraph=True, dynamic=False)``
  (Inductor, which generates and builds C++ for the CPU); the compile time is measured cold, in
  a fresh cache directory per K (the first K also pays Inductor's start-up in this process).

The two functions drop each member's last partial batch (a fixed shape compiles once) and
validate every member on the first rows of its fold's held-out part that all folds have, so
they do slightly less work than the library (a favour to them, not to the library). Before any
timing the compiled step's weights after one epoch are checked against the eager ones
(relative 1e-4: Inductor fuses and reorders the arithmetic, so the float rounding differs).

Printed per K: the compile time (wall and CPU of this process; Inductor also builds in worker
processes), epoch CPU ms of each way, the limit (the epoch's matmul FLOPs at this core's rate,
as ``bench_ensemble.py`` prints it) and each way's distance to it, and how many of the library's
epochs the compile time would pay for.

Run: ``uv run python benchmarks/bench_compiled_step.py [--ks 40,128] [--epochs 6]`` (about 20 s
of compiling per K; needs a C++ compiler, as Inductor on a CPU does).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import _digits_workload as digits
import torch
from torch.nn import functional as F

Params = list[torch.Tensor]

BETAS = (0.9, 0.999)
EPS = 1e-8


def train_step(
    params: Params, m: Params, v: Params, *, step: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
    rates: torch.Tensor,
) -> None:  # fmt: skip
    """One step of every member in place: ``x`` is ``(K, B, 64)``, ``y`` ``(K, B)``."""
    w1, b1, w2, b2 = params
    h = torch.relu(torch.bmm(x, w1.transpose(1, 2)) + b1.unsqueeze(1))
    z = torch.bmm(h, w2.transpose(1, 2)) + b2.unsqueeze(1)
    dz = (torch.softmax(z, -1) - F.one_hot(y, z.shape[-1]).to(z.dtype)) / x.shape[1]
    dh = torch.bmm(dz, w2) * (h > 0)
    grads = [torch.bmm(dh.transpose(1, 2), x), dh.sum(1), torch.bmm(dz.transpose(1, 2), h),
             dz.sum(1)]  # fmt: skip
    beta1, beta2 = BETAS
    fix1, fix2 = 1 - beta1**step, 1 - beta2**step
    for p, g, mean, square in zip(params, grads, m, v, strict=True):
        mean.mul_(beta1).add_(g, alpha=1 - beta1)
        square.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        rate = rates.view(-1, *[1] * (p.dim() - 1))
        p.sub_(rate * (mean / fix1) / ((square / fix2).sqrt() + EPS))


def accuracy(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every member's accuracy on its held-out rows ``x`` ``(K, N, 64)``, ``y`` ``(K, N)``."""
    w1, b1, w2, b2 = params
    h = torch.relu(torch.bmm(x, w1.transpose(1, 2)) + b1.unsqueeze(1))
    z = torch.bmm(h, w2.transpose(1, 2)) + b2.unsqueeze(1)
    return (z.argmax(-1) == y).float().mean(1)


class Stacked:
    """K members' stacked weights and Adam state, their data, and one epoch of training."""

    def __init__(self, k: int) -> None:
        self.X, self.y, folds = digits.data()
        nets = [digits.model(i) for i in range(k)]
        self.params = [
            torch.stack([net[layer].get_parameter(name).detach() for net in nets])
            for layer in (0, 2)
            for name in ("weight", "bias")
        ]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.rates = torch.tensor([digits.lr(i, k) for i in range(k)])
        train = [folds[i % digits.FOLDS][0] for i in range(k)]
        self.n = min(len(t) for t in train)
        self.orders = torch.stack([t[: self.n] for t in train])
        held = [folds[i % digits.FOLDS][1] for i in range(k)]
        shortest = min(len(h) for h in held)
        val = torch.stack([h[:shortest] for h in held])
        self.val_x, self.val_y = self.X[val], self.y[val]
        self.steps = 0
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self, step: Callable[..., None], check: Callable[..., torch.Tensor]) -> None:
        """Shuffle each member's rows, take every full batch, then validate every member."""
        k, batch = len(self.orders), digits.BATCH
        perm = torch.stack([torch.randperm(self.n, generator=self.generator) for _ in range(k)])
        rows = torch.gather(self.orders, 1, perm)
        for start in range(0, self.n - batch + 1, batch):
            flat = rows[:, start : start + batch].reshape(-1)
            x = self.X.index_select(0, flat).view(k, batch, -1)
            y = self.y.index_select(0, flat).view(k, batch)
            self.steps += 1
            step(self.params, self.m, self.v, step=torch.tensor(float(self.steps)), x=x, y=y,
                 rates=self.rates)  # fmt: skip
        check(self.params, self.val_x, self.val_y)

    def copy(self) -> Stacked:
        """A copy with its own weights, state and generator (the same data)."""
        other = copy.copy(self)
        other.params = [p.clone() for p in self.params]
        other.m = [t.clone() for t in self.m]
        other.v = [t.clone() for t in self.v]
        other.generator = torch.Generator().set_state(self.generator.get_state())
        return other


def cpu_ms(run: Callable[[], object]) -> float:
    started = time.process_time()
    run()
    return (time.process_time() - started) * 1e3


def measure(k: int, epochs: int, rate: float) -> None:
    """Compile cold, check the compiled epoch against the eager one, time the three ways."""
    step = torch.compile(train_step, fullgraph=True, dynamic=False)
    check = torch.compile(accuracy, fullgraph=True, dynamic=False)
    compiled, eager = Stacked(k), Stacked(k)
    wall, cpu = time.perf_counter(), time.process_time()
    compiled.copy().epoch(step, check)  # the compile, on a copy: both ways start equal
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    compiled.epoch(step, check)
    eager.epoch(train_step, accuracy)
    worst = max(
        ((a - b).abs().max() / b.abs().max()).item()
        for a, b in zip(compiled.params, eager.params, strict=True)
    )
    if worst > 1e-4:
        raise SystemExit(f"K={k}: the compiled weights differ from the eager ones by {worst:.2e}")
    library = digits.ensemble(k)
    next(library)  # its warm-up epoch
    ways: dict[str, Callable[[], object]] = {
        "library": lambda: next(library),
        "eager": lambda: eager.epoch(train_step, accuracy),
        "compiled": lambda: compiled.epoch(step, check),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for i in range(epochs):  # alternating, the order turned each time
        for name in list(ways)[:: 1 if i % 2 == 0 else -1]:
            times[name].append(cpu_ms(ways[name]))
    ms = {name: statistics.median(values) for name, values in times.items()}
    limit = digits.flops_per_epoch(k) / rate * 1e3
    print(
        f"{k:>4} {wall:>9.1f} {cpu:>8.1f} {worst:>9.1e} {ms['library']:>8.1f} {ms['eager']:>8.1f} "
        f"{ms['compiled']:>9.1f} {limit:>8.1f} {ms['library'] / limit:>7.1f}x "
        f"{ms['compiled'] / limit:>8.1f}x {wall * 1e3 / ms['library']:>9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="40,128", help="comma-separated ensemble sizes")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs of each way")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rate = digits.matmul_rate()
    print(f"torch {torch.__version__}, 1 thread; {digits.DESCRIPTION}")
    print(f"this core's matmul rate: {rate / 1e9:.1f} GFLOP/s; epoch CPU ms, medians of "
          f"{args.epochs} alternating epochs; compile: cold, in a fresh cache")  # fmt: skip
    print(
        f"{'K':>4} {'compile s':>9} {'(cpu s)':>8} {'max diff':>9} {'library':>8} {'eager':>8} "
        f"{'compiled':>9} {'limit':>8} {'library':>8} {'compiled':>9} {'epochs to':>9}"
    )
    print(f"{'':>4} {'':>9} {'':>8} {'':>9} {'ms':>8} {'ms':>8} {'ms':>9} {'ms':>8} "
          f"{'distance':>8} {'distance':>9} {'pay it':>9}")  # fmt: skip
    for k in (int(each) for each in args.ks.split(",")):
        torch._dynamo.reset()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"inductor-k{k}-")
        measure(k, args.epochs, rate)


if __name__ == "__main__":
    main()
