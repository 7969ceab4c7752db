"""The search's arguments, checked at the call: each refusal names the argument and what came."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..._internal.checks import (
    check_bool,
    check_name,
    check_non_negative_int,
    check_positive_int,
    describe,
)
from ..._internal.direction import infer_mode, resolve_mode
from ..._internal.paths import check_folder_target
from ..._internal.rows import check_rows

__all__ = [
    "check_direction",
    "check_folds",
    "check_objectives",
    "check_seconds",
    "check_stages",
    "check_storage",
    "check_study",
    "check_train_data",
    "storage_path",
]


def check_study(study: object, optuna: Any, *, func: str) -> None:
    """Refuse anything but an Optuna study (with one objective, read once it can be)."""
    if not isinstance(study, optuna.study.Study):
        raise TypeError(f"{func}: 'study' must be an optuna Study, got {describe(study)}")


def check_objectives(study: Any, *, func: str) -> None:
    """Refuse a study with several objectives."""
    if len(study.directions) != 1:
        raise ValueError(
            f"{func}: the study must have one objective, it has {len(study.directions)}"
        )


def check_direction(study: Any, key: str, mode: object, optuna: Any, *, func: str) -> None:
    """Refuse a study whose direction contradicts ``key``'s, unless ``mode`` says it is meant.

    The key's direction is inferred from its name by the rule every stage uses
    (``val_loss`` down, ``val_acc`` up); a key whose name tells neither is not checked.
    """
    studied = "min" if study.direction == optuna.study.StudyDirection.MINIMIZE else "max"
    word = {"min": "minimize", "max": "maximize"}
    if mode is not None:
        chosen = resolve_mode(key, mode, func=func)
        if chosen != studied:
            raise ValueError(
                f"{func}: mode={mode!r} says {key!r} improves by going "
                f"{'down' if chosen == 'min' else 'up'}, but the study is created to "
                f"{word[studied]} it; create it with direction={word[chosen]!r}"
            )
        return
    inferred = infer_mode(key)
    if inferred is not None and inferred != studied:
        raise ValueError(
            f"{func}: the study is created to {word[studied]} its value, but {key!r} "
            f"improves by going {'down' if inferred == 'min' else 'up'}; create the study with "
            f"direction={word[inferred]!r}, or pass mode={studied!r} if a "
            f"{'higher' if studied == 'max' else 'lower'} {key} really is better"
        )


def check_train_data(train_data: object, *, func: str) -> torch.device:
    """Refuse ``train_data`` that is not a non-empty tuple of tensors; return their device."""
    if not isinstance(train_data, list | tuple) or not train_data:
        raise TypeError(
            f"{func}: 'train_data' must be a tuple of tensors such as (X, y), got "
            f"{describe(train_data)}"
        )
    first = train_data[0]
    return first.device if isinstance(first, torch.Tensor) else torch.device("cpu")


def check_stages(stages: object, *, func: str) -> list[Any]:
    """Refuse ``stages`` that is not a list of callables."""
    if isinstance(stages, str) or not isinstance(stages, list | tuple):
        raise TypeError(f"{func}: 'stages' must be a list of stages, got {describe(stages)}")
    for i, stage in enumerate(stages):
        if not callable(stage):
            raise TypeError(f"{func}: 'stages[{i}]' must be a stage, got {describe(stage)}")
    return list(stages)


def check_folds(
    folds: object, train_data: Sequence[Any], slots: int, *, func: str
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Refuse ``folds`` unless it is what :func:`~fitstream.kfold` gives: (train, held) pairs."""
    if folds is None:
        return None
    if not isinstance(folds, list | tuple) or not folds:
        raise TypeError(
            f"{func}: 'folds' must be a list of (train_rows, held_out_rows) pairs, as kfold(...) "
            f"or bootstrap(...) gives, got {describe(folds)}"
        )
    for f, pair in enumerate(folds):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise TypeError(
                f"{func}: 'folds[{f}]' must be a (train_rows, held_out_rows) pair, got "
                f"{describe(pair)}"
            )
    first = train_data[0]
    n, device = int(first.shape[0]), first.device
    train = check_rows([p[0] for p in folds], n, device, members=len(folds), func=func,
                       data="train_data")  # fmt: skip
    held = check_rows([p[1] for p in folds], n, device, members=len(folds), func=func,
                      data="train_data")  # fmt: skip
    assert train is not None
    assert held is not None
    if slots < len(folds):
        raise ValueError(
            f"{func}: 'slots' must hold at least one trial's {len(folds)} fold members "
            f"(one per fold), got slots={slots}"
        )
    return list(zip(train, held, strict=True))


def check_seconds(value: object, *, func: str, arg: str) -> float | None:
    """Refuse a duration that is not a positive number of seconds (``None`` passes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{func}: '{arg}' must be a number of seconds, got {describe(value)}")
    if value <= 0:
        raise ValueError(f"{func}: '{arg}' must be a positive number of seconds, got {value!r}")
    return float(value)


def storage_path(storage: Any) -> Path | None:
    """The file an Optuna storage writes: a journal file, or an SQLite database; else None."""
    inner = getattr(storage, "_backend", storage)  # a journal's log file; an RDB's cache
    path = getattr(inner, "_file_path", None)
    if isinstance(path, str):
        return Path(path)
    url = getattr(inner, "url", None)
    if isinstance(url, str) and url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    return None


def check_storage(study: Any, *, func: str) -> None:
    """Refuse a study whose storage file cannot be written, naming the file and why."""
    path = storage_path(study._storage)
    if path is None:
        return
    where = f"{func}: the study's storage {str(path)!r}"
    if path.is_dir():
        raise IsADirectoryError(f"{where} is a folder, not a file; give the storage a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{where} is read-only; the search writes every trial to it")
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{where} lies in {str(folder)!r}, where this process cannot write (the storage "
            "writes its lock and journal files beside it)"
        )


def check_options(
    *, key: object, epochs: object, n_trials: object, slots: object, every: object,
    batch_size: object, startup: object, seed: object, prune: object, shuffle: object,
    progress: object, pad: object, save_dir: object, func: str,
) -> Path | None:  # fmt: skip
    """Check the plain options; return ``save_dir`` as a path (None if not given)."""
    check_name(key, func=func, what="'key'")
    for name, value in (("epochs", epochs), ("n_trials", n_trials), ("slots", slots),
                        ("every", every), ("batch_size", batch_size)):  # fmt: skip
        check_positive_int(value, func=func, arg=name)
    if startup is not None:
        check_non_negative_int(startup, func=func, arg="startup")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{func}: 'seed' must be an int, got {describe(seed)}")
    for name, flag in (("prune", prune), ("shuffle", shuffle), ("progress", progress),
                       ("pad", pad)):  # fmt: skip
        check_bool(flag, func=func, arg=name)
    if save_dir is None:
        return None
    if not isinstance(save_dir, str | os.PathLike):
        raise TypeError(f"{func}: 'save_dir' must be a folder path, got {describe(save_dir)}")
    folder = Path(save_dir)
    check_folder_target(folder, func=func, arg="save_dir")
    return folder
