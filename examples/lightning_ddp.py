"""DDP on two CPU processes: every rank runs the same stream and stops at the same epoch.

Run it with ``uv run torchrun --nproc-per-node=2 examples/lightning_ddp.py``. torchrun starts
one process per rank; each builds the same Trainer (``strategy="ddp"``, gloo on CPU) and
iterates its own ``fit_stream``. Here only rank 0 decides when to stop (``early_stop`` on the
validation loss, at most ``FITSTREAM_EXAMPLE_EPOCHS`` epochs); the other ranks just follow
their streams. At each epoch boundary the ranks agree: a stop decided on any rank stops every
rank at that same epoch, so none is left waiting. Each rank prints where it stopped.

``FITSTREAM_EXAMPLE_EPOCHS`` caps the number of epochs on rank 0 (default 30); the Trainer
itself would run 1000.
"""

from __future__ import annotations

import os
from itertools import islice

import torch
from fitstream_lightning import fit_stream
from lightning_fit_stream import DigitsClassifier, DigitsData, quiet_lightning, quiet_trainer

from fitstream import early_stop, pipe, print_keys, tap


def main() -> None:
    max_epochs = int(os.environ.get("FITSTREAM_EXAMPLE_EPOCHS", "30"))
    if "LOCAL_WORLD_SIZE" not in os.environ:  # plain `python`, not torchrun
        print(
            "lightning_ddp.py: started without torchrun, so this runs ONE process; for two, "
            "run: uv run torchrun --nproc-per-node=2 examples/lightning_ddp.py",
            flush=True,
        )
    quiet_lightning()
    torch.manual_seed(0)
    trainer = quiet_trainer(
        1000, strategy="ddp", devices=int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    )
    last: dict[str, object] = {}
    with fit_stream(trainer, DigitsClassifier(), datamodule=DigitsData()) as events:
        if trainer.global_rank == 0:
            decided = pipe(
                events,
                early_stop(key="val_loss", patience=5),
                tap(print_keys("train_loss", "val_loss", "val_acc")),
            )
            for event in islice(decided, max_epochs):
                last = event
        else:
            for event in events:  # no stop of its own: follows rank 0
                last = event
    # One write per line (newline included), so the ranks' lines never interleave on a shared
    # stdout: print() would write the text and its newline separately when unbuffered.
    print(
        f"rank {trainer.global_rank}: stopped after epoch {last.get('step')} "
        f"(trainer epoch {trainer.current_epoch}), train_loss={last.get('train_loss', 0):.6f}\n",
        end="",
        flush=True,
    )


if __name__ == "__main__":
    main()
