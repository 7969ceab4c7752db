"""The options of the training step that both sources take, checked in one place.

``clip_grad_norm``/``clip_grad_value`` (:mod:`.clipping`), ``accumulate``, ``autocast``
(:mod:`.precision`), ``schedulers`` (:mod:`.schedules`) and ``train_metrics``
(:mod:`.train_metrics`) change what happens inside an epoch, which only the source sees. Every
one is off by default, and a source with all of them off runs its plain loop, untouched. With
``cuda_graphs=True`` clipping and bfloat16 autocast are captured in the graph; the others are
refused at the call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._internal.checks import check_positive_int
from .._internal.metrics import MetricSpec
from .clipping import Clip, check_clip
from .precision import check_autocast
from .schedules import check_schedulers
from .train_metrics import check_train_metrics

__all__ = ["StepOptions", "check_step_options"]


@dataclass(frozen=True)
class StepOptions:
    """The checked step options; :attr:`plain` when none is on."""

    clip: Clip | None = None
    accumulate: int = 1
    autocast: torch.dtype | None = None
    schedulers: tuple[Any, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()

    @property
    def plain(self) -> bool:
        """Whether every option is off (the source's plain loop runs)."""
        return (
            self.clip is None
            and self.accumulate == 1
            and self.autocast is None
            and not self.schedulers
            and not self.metrics
        )

    def given(self) -> list[str]:
        """The keywords of the options that are on, for messages."""
        names = []
        if self.clip is not None:
            names.append("clip_grad_norm" if self.clip.norm is not None else "clip_grad_value")
        if self.accumulate != 1:
            names.append("accumulate")
        if self.autocast is not None:
            names.append("autocast")
        if self.schedulers:
            names.append("schedulers")
        if self.metrics:
            names.append("train_metrics")
        return names


def check_step_options(
    *,
    clip_grad_norm: object,
    clip_grad_value: object,
    accumulate: object,
    autocast: object,
    schedulers: object,
    train_metrics: object,
    optimizers: Sequence[Any],
    device: torch.device,
    extra: Mapping[str, Any],
    cuda_graphs: bool,
    ensemble: bool,
    func: str,
    last_label: bool = True,
) -> StepOptions:
    """Check every step option of a source's call; refuse those ``cuda_graphs`` cannot take.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> options = check_step_options(
        ...     clip_grad_norm=None, clip_grad_value=None, accumulate=2, autocast=None,
        ...     schedulers=None, train_metrics=None, optimizers=[opt],
        ...     device=torch.device("cpu"), extra={}, cuda_graphs=False, ensemble=False,
        ...     func="f")
        >>> options.accumulate, options.plain
        (2, False)
    """
    clip = check_clip(clip_grad_norm, clip_grad_value, func=func)
    check_positive_int(accumulate, func=func, arg="accumulate")
    assert isinstance(accumulate, int)
    options = StepOptions(
        clip=clip,
        accumulate=accumulate,
        autocast=check_autocast(autocast, device, ensemble=ensemble, func=func),
        schedulers=check_schedulers(schedulers, optimizers, ensemble=ensemble, func=func),
        metrics=check_train_metrics(train_metrics, extra, func=func, last_label=last_label),
    )
    if cuda_graphs:
        _check_capturable(options, func=func)
    return options


def _check_capturable(options: StepOptions, *, func: str) -> None:
    """Refuse the options a CUDA graph does not capture: those with host work per step.

    Clipping and bfloat16 autocast are device work and are captured with the step.
    """
    given = [
        "autocast=torch.float16" if name == "autocast" else name
        for name in options.given()
        if name not in ("clip_grad_norm", "clip_grad_value", "autocast")
        or (name == "autocast" and options.autocast == torch.float16)  # its scaler syncs
    ]
    if given:
        raise ValueError(
            f"{func}: {', '.join(given)} {'is' if len(given) == 1 else 'are'} not captured in "
            f"the CUDA graph of cuda_graphs=True yet; pass cuda_graphs=False to train with "
            f"{'it' if len(given) == 1 else 'them'} on the eager step"
        )
