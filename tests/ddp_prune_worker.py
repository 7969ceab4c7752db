"""``prune`` on ``fit_stream`` under DDP: run with torchrun by tests/test_prune_ddp.py.

Both ranks run the same pipeline. Rank 0 holds the Optuna trial (an in-memory study whose
pruner prunes at the second epoch); rank 1 passes ``trial=None``, as Optuna's recipe for DDP
has it. Each rank prints how its stream ended.
"""

from __future__ import annotations

import os
import threading

import torch


def main() -> None:
    """Train a tiny module on 2 CPU ranks until the shared prune decision ends it."""
    import optuna
    from ddp_tiny import Tiny, loader
    from fitstream_lightning import fit_stream
    from lightning.pytorch import Trainer

    from fitstream import pipe, prune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = loader()
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
        for event in pipe(fit_stream(trainer, Tiny(), data, data), prune(trial, "val_loss")):
            steps.append(event["step"])
        outcome = "ended"
    except optuna.TrialPruned as pruned:
        outcome = f"pruned ({pruned})"
        if study is not None and trial is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    state = "" if study is None else f", trial {study.trials[0].state.name}"
    print(f"rank {rank}: saw steps {steps}, {outcome}{state}\n", end="", flush=True)
    others = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    print(f"rank {rank} threads left: {others}\n", end="", flush=True)
    # the end a DDP script should have (torch's advice): without it, gloo's threads were torn
    # down at interpreter exit, which aborted a rank now and then on a loaded machine
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
