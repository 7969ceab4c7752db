"""The classification workload of ``bench_ensemble.py --workload digits``, and its limit.

scikit-learn's digits (1797 x 64, standardised), MLP 64-32-10, cross-entropy, Adam, batch 32,
a 5-fold split: member ``k`` trains on fold ``k % 5``'s training rows (``rows=``) with its own
learning rate, and is validated on that fold's held-out rows after every epoch (accuracy, with
``evaluate(..., folds=)``), so K=40 is a 5-fold x 8-lr grid. The single contender is
``epoch_stream`` training one such model on fold 0, validated on fold 0, in the same way.

The limit is the epoch's arithmetic at this core's measured matmul rate: the FLOPs of the matmuls
(forward ``2ab`` per row and layer, backward ``2ab`` for the weight gradient plus ``2ab`` for the
input gradient except at the first layer, validation forward only), divided by the GFLOP/s of a
large single-thread ``torch.mm``. Elementwise work (activations, loss, Adam) is left out, so the
limit is a floor no loop reaches.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import torch
from torch import nn

from fitstream import augment, ensemble_stream, epoch_stream, evaluate, kfold, pipe

WIDTHS = (64, 32, 10)
BATCH = 32
FOLDS = 5
DESCRIPTION = (
    "digits 1797x64 (5 folds, fold k%5 per member), MLP 64-32-10, cross-entropy, Adam, "
    "batch 32, validation accuracy every epoch"
)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, pixels scaled to [0, 1], and their labels (the benchmarks' data)."""
    from sklearn.datasets import load_digits

    loaded = load_digits()
    return torch.tensor(loaded.data, dtype=torch.float32) / 16, torch.tensor(loaded.target)


def data() -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Digits standardised per pixel, labels and the 5-fold split (the Speed page's workload)."""
    X, y = digits()
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    return X, y, kfold(len(X), FOLDS, generator=torch.Generator().manual_seed(0))


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == labels).float().mean()


def lr(k: int, n: int) -> float:
    """Member ``k``'s learning rate: ``n`` settings spread over 1e-4..1e-2."""
    setting = k // FOLDS
    settings = max((n + FOLDS - 1) // FOLDS, 2)
    return 1e-4 * 10 ** (2 * setting / (settings - 1))


def single() -> Iterator[dict[str, object]]:
    """``epoch_stream`` on fold 0, validated on fold 0's held-out rows."""
    X, y, folds = data()
    train, val = folds[0]
    net = model(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    events = epoch_stream((X[train], y[train]), net, opt, nn.CrossEntropyLoss(), batch_size=BATCH)
    return pipe(events, augment(evaluate((X[val], y[val]), metrics={"val_acc": accuracy})))


def ensemble(k: int) -> Iterator[dict[str, object]]:
    """``ensemble_stream`` of ``k`` members, member ``i`` on fold ``i % 5``."""
    X, y, folds = data()
    nets = [model(i) for i in range(k)]
    opts = [torch.optim.Adam(m.parameters(), lr=lr(i, k)) for i, m in enumerate(nets)]
    events = ensemble_stream(
        (X, y), nets, opts, nn.CrossEntropyLoss(), batch_size=BATCH,
        rows=[folds[i % FOLDS][0] for i in range(k)],
        hparams=[{"fold": i % FOLDS} for i in range(k)],
    )  # fmt: skip
    check = evaluate((X, y), metrics={"val_acc": accuracy}, folds=folds)
    return pipe(events, augment(check))


def flops_per_epoch(k: int) -> float:
    """The matmul FLOPs of one epoch of ``k`` members (training and validation)."""
    _, _, folds = data()
    total = 0.0
    for i in range(k):
        train, val = folds[i % FOLDS]
        for layer, (a, b) in enumerate(itertools.pairwise(WIDTHS)):
            passes = 2 if layer == 0 else 3  # forward, weight grad (, input grad)
            total += 2 * a * b * (passes * len(train) + len(val))
    return total


def matmul_rate(size: int = 1024, repeats: int = 5) -> float:
    """This core's matmul rate in FLOP/s: the best of ``repeats`` ``size``-cubed ``torch.mm``."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best
