"""One rank's consumer fails under DDP: run with torchrun by tests/test_ddp_failure.py.

Both ranks run ``fit_stream`` in a ``with`` block (fitstream's way to mark a run failed). Rank
0's consumer raises a ``ValueError`` at the second event, or (``--stage``) a stage of a
``StreamCallback`` raises there. Each rank prints how its run ended.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main() -> None:
    """Train a tiny module on 2 CPU ranks until rank 0's consumer fails."""
    from ddp_tiny import Tiny, loader
    from fitstream_lightning import OtherRankFailed, StreamCallback, fit_stream
    from lightning.pytorch import Trainer

    from fitstream import tap

    data = loader()
    rank = int(os.environ.get("RANK", "0"))

    def fail_on_rank_0(event: Any) -> None:
        if rank == 0 and event["step"] == 2:
            raise ValueError("rank 0's consumer gave up")

    stage = "--stage" in sys.argv
    callbacks = [StreamCallback(tap(fail_on_rank_0))] if stage else []
    trainer = Trainer(max_epochs=6, accelerator="cpu", devices=2, strategy="ddp",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks)  # fmt: skip
    steps: list[int] = []
    try:
        if stage:
            trainer.fit(Tiny(), data)
        else:
            with fit_stream(trainer, Tiny(), data) as events:
                for event in events:
                    steps.append(event["step"])
                    fail_on_rank_0(event)
        outcome = "ended"
    except OtherRankFailed as exc:
        outcome = f"OtherRankFailed: {exc}"
    except ValueError as exc:
        outcome = f"ValueError: {exc}"
    print(f"rank {rank}: saw steps {steps}, {outcome}\n", end="", flush=True)


if __name__ == "__main__":
    main()
