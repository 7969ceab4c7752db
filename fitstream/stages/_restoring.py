"""Loading a checkpoint file into live objects, all or nothing: what :func:`resume` does.

Everything a resume may change (the model's and optimizers' states, the stages, the random
generators) is taken first and put back if anything is refused, so a failed resume leaves
the objects as they were.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._internal.source_state import restore
from ._checkpoint_file import load, load_model, load_optimizers, rng_states, set_rng_states
from ._stateful import Stateful

__all__ = ["Restored", "restore_file", "stage_name"]


@dataclass(frozen=True)
class Restored:
    """Where a loaded run was: its ``step``, and the ensemble members it had frozen."""

    step: int
    frozen: list[int]


def stage_name(stage: Stateful) -> str:
    return str(getattr(stage, "name", type(stage).__name__))


class _Backup:
    """What a resume may change, taken before it starts, to put back if it is refused."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        stages: tuple[Stateful, ...],
        generator: torch.Generator | None,
    ) -> None:
        modules = model if isinstance(model, list | tuple) else [model]
        self.modules = [m for m in modules if callable(getattr(m, "state_dict", None))]
        self.weights = [copy.deepcopy(m.state_dict()) for m in self.modules]
        opts = optimizer if isinstance(optimizer, list | tuple) else [optimizer]
        self.optimizers = [o for o in opts if callable(getattr(o, "state_dict", None))]
        self.optimizer_states = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        self.stages = [(stage, dict(vars(stage))) for stage in stages if hasattr(stage, "__dict__")]
        self.generator = generator
        self.rng = rng_states(generator)

    def put_back(self) -> None:
        for module, weights in zip(self.modules, self.weights, strict=True):
            module.load_state_dict(weights)
        for opt, state in zip(self.optimizers, self.optimizer_states, strict=True):
            opt.load_state_dict(state)
        for stage, attributes in self.stages:
            vars(stage).clear()
            vars(stage).update(attributes)
        set_rng_states(self.rng, self.generator)


def restore_file(
    source: Path,
    model: Any,
    optimizer: Any,
    restored: tuple[Stateful, ...],
    shuffle: torch.Generator | None,
    *,
    func: str,
) -> Restored:
    """Load ``source`` into checked objects (see :func:`resume`); say where the run was."""
    content = load(source, func=func)
    saved = content["stages"]
    names = [stage_name(stage) for stage in restored]
    if [entry["name"] for entry in saved] != names:
        raise ValueError(
            f"{func}: the checkpoint holds the stages {[e['name'] for e in saved]} but "
            f"'stages' has {names}; give the same stateful stages, in the same order, as to "
            f"the run that wrote it"
        )
    if content["lightning"] and (model is not None or optimizer is not None):
        raise ValueError(
            f"{func}: {str(source)!r} is a Lightning checkpoint; the Trainer restores the "
            f"model and optimizers with fit_stream(..., ckpt_path=path), so leave out "
            f"'model' and 'optimizer'"
        )
    step = content.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(
            f"{func}: {str(source)!r} holds step={step!r:.40} ({type(step).__name__}), where a "
            "checkpoint holds the whole number of epochs it was written after; the file is "
            "damaged, or was not written by checkpoint(...)"
        )
    backup = _Backup(model, optimizer, restored, shuffle)
    try:
        if not content["lightning"]:
            load_model(model, content["model"], func=func)
            load_optimizers(optimizer, content["optimizers"], func=func,
                            kinds=content.get("optimizer_kinds"))  # fmt: skip
        for stage, entry in zip(restored, saved, strict=True):
            stage.set_state(entry["state"])
        set_rng_states(content["rng"], shuffle, func=func, warn_missing=True)
        if not content["lightning"] and optimizer is not None:
            optimizers = list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
            for opt, states in zip(optimizers, content.get("source_state") or [], strict=False):
                restore(opt, states)  # last: it cannot fail, and is not backed up
        active = content.get("active")  # None before 0.7, and for a single model
        return Restored(
            step=step if step is not None else 0,
            frozen=[k for k, on in enumerate(active or []) if not on],
        )
    except BaseException:
        backup.put_back()  # a refused resume changes nothing
        raise
