"""The checkpoint file: its format, atomic writing, and loading it back into live objects.

Used by :func:`fitstream.checkpoint` and :func:`fitstream.resume`; see there for what is saved.
"""

from __future__ import annotations

import glob
import os
import random
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._internal.checks import describe

__all__ = [
    "FORMAT",
    "LIGHTNING_KEY",
    "compact",
    "load",
    "load_model",
    "load_optimizers",
    "remove_stale_temporaries",
    "rng_states",
    "set_rng_states",
    "write_atomically",
    "write_lightning",
]

FORMAT = "fitstream-checkpoint-1"
LIGHTNING_KEY = "fitstream"  # where a Lightning checkpoint holds what FitStream adds


def _own(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and (
        value.untyped_storage().nbytes() > value.numel() * value.element_size()
    ):
        return value.clone()
    return value


def compact(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict`` with its views cloned, so ``torch.save`` writes them alone.

    (``torch.save`` writes a view's whole storage: an ensemble member's state is a view into
    the state of all members.)
    """
    state = optimizer_state.get("state")
    if not isinstance(state, dict):
        return optimizer_state
    own = {
        key: {name: _own(v) for name, v in entry.items()} if isinstance(entry, dict) else entry
        for key, entry in state.items()
    }
    return {**optimizer_state, "state": own}


def rng_states(generator: torch.Generator | None) -> dict[str, Any]:
    in_use = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.get_rng_state_all() if in_use else None
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": random.getstate(),
        "generator": None if generator is None else generator.get_state(),
    }


def set_rng_states(
    states: Mapping[str, Any],
    generator: torch.Generator | None,
    *,
    func: str = "resume",
    warn_missing: bool = False,
) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if generator is None and states["generator"] is not None and warn_missing:
        warnings.warn(
            f"{func}: the checkpoint holds the state of the shuffle generator the run had, but "
            f"no 'generator' was given: the run will shuffle differently from the one that "
            f"stopped; pass the generator given to epoch_stream as generator=",
            UserWarning,
            stacklevel=4,
        )
    if generator is not None:
        if states["generator"] is None:
            raise ValueError(
                f"{func}: 'generator' was given but the checkpoint holds no generator state "
                "(checkpoint(...) was made without generator=)"
            )
        generator.set_state(states["generator"])


def write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Save ``content`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    remove_stale_temporaries(path)


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of ``path`` left by writes that were killed (``kill -9``).

    Called after a write of ``path`` has succeeded: any temporary of the same name still there
    belongs to a write that never finished.
    """
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_lightning(
    path: Path,
    event: Mapping[str, Any],
    saved_stages: list[dict[str, Any]],
    generator: torch.Generator | None,
) -> None:
    trainer = event["trainer"]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        trainer.save_checkpoint(temporary)
        content = torch.load(temporary, map_location="cpu", weights_only=False)
        content[LIGHTNING_KEY] = {
            "format": FORMAT,
            "step": event.get("step"),
            "rng": rng_states(generator),
            "stages": saved_stages,
        }
        write_atomically(path, content)
    finally:
        Path(temporary).unlink(missing_ok=True)


def load(path: Path, *, func: str) -> dict[str, Any]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        # Never pass on torch's advice to retry with weights_only=False: a FitStream
        # checkpoint holds only tensors and plain values, so a file that needs it is not one.
        raise ValueError(
            f"{func}: {str(path)!r} is not a FitStream checkpoint: torch.load cannot read it "
            f"as tensors and plain values ({type(exc).__name__}); give the file that "
            f"checkpoint(...) or resumable(...) wrote"
        ) from None
    if isinstance(content, dict) and isinstance(content.get(LIGHTNING_KEY), dict):
        return {**content[LIGHTNING_KEY], "lightning": True}
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(
            f"{func}: {str(path)!r} was not written by fitstream.checkpoint (no "
            f"{FORMAT!r} format mark)"
        )
    return {**content, "lightning": False}


def load_model(model: Any, state: Any, *, func: str) -> None:
    if model is None:
        return
    if isinstance(state, list):  # an ensemble: one state per member
        members = list(model) if isinstance(model, list | tuple) else None
        if members is None or len(members) != len(state):
            raise ValueError(
                f"{func}: the checkpoint holds {len(state)} ensemble members; pass 'model' as "
                f"the list of the {len(state)} member modules, got {describe(model)}"
            )
        for member, member_state in zip(members, state, strict=True):
            member.load_state_dict(member_state)
        return
    if not callable(getattr(model, "load_state_dict", None)):
        raise TypeError(f"{func}: 'model' must be an nn.Module, got {describe(model)}")
    model.load_state_dict(state)


def _saved_kind(state: dict[str, Any], kinds: Any, position: int) -> str:
    """The class of the optimizer a state was saved from: recorded (0.7), else told by its state."""
    if isinstance(kinds, list) and position < len(kinds) and isinstance(kinds[position], str):
        return str(kinds[position])
    entries = {k for entry in state.get("state", {}).values() for k in entry}
    if "exp_avg" in entries:
        return "Adam or AdamW"
    if "momentum_buffer" in entries:
        return "SGD"
    if "square_avg" in entries:
        return "RMSprop"
    group = (state.get("param_groups") or [{}])[0]
    if "betas" in group:
        return "Adam or AdamW"
    if "momentum" in group and "dampening" in group:
        return "SGD"
    return "another optimizer"


def load_optimizers(optimizer: Any, states: list[Any], *, func: str, kinds: Any = None) -> None:
    if optimizer is None:
        return
    optimizers = list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
    if len(optimizers) != len(states):
        raise ValueError(
            f"{func}: the checkpoint holds {len(states)} optimizer states but "
            f"{len(optimizers)} optimizers were given"
        )
    for position, (opt, state) in enumerate(zip(optimizers, states, strict=True)):
        if not callable(getattr(opt, "load_state_dict", None)):
            raise TypeError(
                f"{func}: 'optimizer' must be a torch optimizer (or a list of them), got "
                f"{describe(opt)}"
            )
        saved = sorted({k for entry in state.get("state", {}).values() for k in entry})
        kind = type(opt).__name__
        was = _saved_kind(state, kinds, position)
        if isinstance(kinds, list) and position < len(kinds) and was != kind:
            raise ValueError(
                f"{func}: optimizer {position} is {kind}, but the checkpoint's was {was}; "
                f"build the optimizer the run was saved with"
            )
        try:
            opt.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                f"{func}: optimizer {position} is {kind}, but the checkpoint's was {was} "
                f"(its state holds {saved}), or over other parameters; build the optimizer the "
                f"run was saved with ({type(exc).__name__}: {exc})"
            ) from exc
        defaults = set(getattr(opt, "defaults", {}))
        lacking = sorted(defaults - set(opt.param_groups[0])) if opt.param_groups else []
        if lacking:  # e.g. Adam's settings loaded into an SGD, which then needs 'momentum'
            raise ValueError(
                f"{func}: optimizer {position} is {kind}, but the checkpoint's was {was}: "
                f"its settings lack {lacking}; build the optimizer the run was saved with"
            )
