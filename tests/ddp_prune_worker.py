"""``prune`` on ``fit_stream`` under DDP: run with torchrun by tests/test_prune_ddp.py.

Both ranks run the same pipeline. Rank 0 holds the Optuna trial (an in-memory study whose
pruner prunes at the second epoch); rank 1 passes ``trial=None``, as Optuna's recipe for DDP
has it. Each rank prints how its stream ended.
"""

from __future__ import annotations

import os
from typing import Any


def main() -> None:
    """Train a tiny module on 2 CPU ranks until the shared prune decision ends it."""
    import optuna
    import torch
    from fitstream_lightning import fit_stream
    from lightning.pytorch import LightningModule, Trainer
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from fitstream import pipe, prune

    class Tiny(LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    rank = int(os.environ.get("RANK", "0"))
    study = trial = None
    if rank == 0:
        pruner = optuna.pruners.ThresholdPruner(upper=-1.0, n_warmup_steps=2)
        study = optuna.create_study(pruner=pruner)
        trial = study.ask()
    trainer = Trainer(max_epochs=50, accelerator="cpu", devices=2, strategy="ddp",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    steps: list[int] = []
    try:
        for event in pipe(fit_stream(trainer, Tiny(), loader, loader), prune(trial, "val_loss")):
            steps.append(event["step"])
        outcome = "ended"
    except optuna.TrialPruned as pruned:
        outcome = f"pruned ({pruned})"
        if study is not None and trial is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    state = "" if study is None else f", trial {study.trials[0].state.name}"
    print(f"rank {rank}: saw steps {steps}, {outcome}{state}\n", end="", flush=True)


if __name__ == "__main__":
    main()
