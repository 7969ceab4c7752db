"""Compare settings, architectures included: widths x learning rates under 5-fold CV, in one call.

Run it with ``python examples/compare_settings.py``. On scikit-learn's bundled digits (no
download) it judges 2 widths x 4 Adam learning rates by 5-fold cross-validation: the grid is an
Optuna study whose ``GridSampler`` enumerates the 8 settings, and ``search(..., folds=...)``
trains every setting on every fold at once (40 members). It then prints the table of
``summarize(study)`` (each setting's mean accuracy ± its standard error, and its paired
difference to the winner, fold by fold), saves the banded plot of every setting's mean curve,
trains the winner again on all the training rows for its best epoch count (``refit``) and
prints its accuracy on held-out test rows.

Several processes share the grid through a journal file, each taking the settings the others
have not::

    python examples/compare_settings.py --journal runs/grid.log &
    python examples/compare_settings.py --journal runs/grid.log
    wait

Each worker waits for the others' settings to end, then prints the whole table.

``FITSTREAM_EXAMPLE_EPOCHS`` sets the epochs (default 20).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn

from fitstream import augment, evaluate, kfold, plot_history, refit, search, summarize

GRID = {"width": [16, 64], "lr": [1e-3, 3e-3, 1e-2, 3e-2]}
COLUMNS = ["width", "lr", "n", "best_step", "mean", "sem", "diff", "diff_sem", "best_at_end"]


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(dim=1) == labels).float().mean()


def build(trial: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    """One setting's model and optimizer (called once per fold, with the same parameters)."""
    width = trial.suggest_categorical("width", GRID["width"])
    lr = trial.suggest_categorical("lr", GRID["lr"])
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def load() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Training rows for the cross-validation, and test rows the winner is judged on."""
    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train, test = order[:1500], order[1500:]
    return (X[train], y[train]), (X[test], y[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", help="share the grid with other workers through this file")
    parser.add_argument("--plot", default="compare_settings.png", help="where to save the plot")
    args = parser.parse_args()
    epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "20"))
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (X, y), (X_test, y_test) = load()
    folds = kfold(len(X), 5, stratify=y, generator=torch.Generator().manual_seed(0))

    storage = None
    if args.journal:
        Path(args.journal).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(args.journal)
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(
        storage=storage,
        study_name="compare-settings",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.GridSampler(GRID, seed=0),
    )
    n_settings = len(GRID["width"]) * len(GRID["lr"])
    search(
        study,
        build,
        (X, y),
        nn.CrossEntropyLoss(),
        key="val_acc",
        epochs=epochs,
        n_trials=n_settings,
        slots=5 * n_settings,  # every setting on every fold at once
        batch_size=32,
        folds=folds,
        stages=[augment(evaluate((X, y), metrics={"val_acc": accuracy}, folds=folds))],
        prune=False,
        progress=True,
    )

    table = summarize(study)
    print(f"{n_settings} settings x 5 folds, {epochs} epochs; best first:")
    print(table[COLUMNS].round(4).to_string(index=False))
    best = table.iloc[0]
    print(f"winner: width={best['width']}, lr={best['lr']:g}, val_acc {best['mean']:.4f} "
          f"± {best['sem']:.4f} at epoch {best['best_step']}")  # fmt: skip
    plot_history(study, group_by=["width", "lr"], save=args.plot,
                 title="digits: mean val_acc over 5 folds, ±1 std")  # fmt: skip
    print(f"plot: {args.plot}")

    model = refit(study, build, (X, y), nn.CrossEntropyLoss(), batch_size=32)
    with torch.no_grad():
        test_accuracy = accuracy(model(X_test), y_test).item()
    print(f"the winner refit on all {len(X)} training rows: test accuracy {test_accuracy:.3f}")


if __name__ == "__main__":
    main()
