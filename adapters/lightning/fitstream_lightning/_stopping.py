"""Stop a Trainer at the current epoch boundary, even below ``min_epochs``/``min_steps``."""

from __future__ import annotations

from lightning.pytorch import Trainer

__all__ = ["Limits", "stop_at_this_epoch"]


class Limits:
    """The Trainer's ``min_epochs``/``min_steps``, saved so they can be put back after a stop.

    Example:
        >>> trainer = Trainer(min_epochs=5, accelerator="cpu", logger=False)
        >>> limits = Limits(trainer)
        >>> stop_at_this_epoch(trainer)
        >>> trainer.should_stop, trainer.fit_loop.min_epochs
        (True, 0)
        >>> limits.restore(trainer)
        >>> trainer.fit_loop.min_epochs
        5
    """

    def __init__(self, trainer: Trainer) -> None:
        self.min_epochs = trainer.fit_loop.min_epochs
        self.min_steps = trainer.fit_loop.epoch_loop.min_steps

    def restore(self, trainer: Trainer) -> None:
        """Put the saved values back on ``trainer``."""
        trainer.fit_loop.min_epochs = self.min_epochs
        trainer.fit_loop.epoch_loop.min_steps = self.min_steps


def stop_at_this_epoch(trainer: Trainer) -> None:
    """Ask ``trainer`` to end ``fit`` normally after the epoch that is ending now.

    ``min_epochs`` and ``min_steps`` are relaxed, otherwise Lightning would keep training;
    the caller restores them with :class:`Limits` once ``fit`` has returned.
    """
    trainer.fit_loop.min_epochs = 0
    trainer.fit_loop.epoch_loop.min_steps = None
    trainer.should_stop = True
