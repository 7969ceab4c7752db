"""Which strategies can be streamed: those that run ``fit`` in the calling process."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

__all__ = ["check_streamable"]


def check_streamable(trainer: Trainer, func: str) -> None:
    """Refuse strategies that run ``fit`` in child processes (``ddp_spawn``, ``ddp_notebook``).

    Their epochs happen in other processes, so there is nothing to stream back here.
    ``strategy="ddp"`` launched with ``torchrun`` (or Lightning's own script launcher) runs
    ``fit`` in every process, and each process gets the same stream.

    Raises:
        ValueError: The trainer's strategy launches ``fit`` in child processes.

    Example:
        >>> check_streamable(Trainer(accelerator="cpu", devices=1, logger=False), "fit_stream")
        >>> spawn = Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
        >>> check_streamable(spawn, "fit_stream")
        Traceback (most recent call last):
        ...
        ValueError: fit_stream: the trainer's strategy DDPStrategy (start method 'spawn') ...
    """
    strategy = trainer.strategy
    launcher = strategy.launcher
    if launcher is None or isinstance(launcher, _SubprocessScriptLauncher):
        return
    start = getattr(strategy, "_start_method", None)
    how = f" (start method {start!r})" if start else ""
    raise ValueError(
        f"{func}: the trainer's strategy {type(strategy).__name__}{how} runs `fit` in child "
        "processes, so their epochs cannot be streamed back to this process. Use "
        'Trainer(strategy="ddp") and launch the script with torchrun, e.g. '
        "`torchrun --nproc-per-node=2 train.py`: every process then runs the same stream."
    )
