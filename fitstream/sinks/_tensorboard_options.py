"""The checked options of :func:`fitstream.log_tensorboard` and its sink form."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._internal.checks import check_bool, check_positive_int
from .._internal.optional import require
from .._internal.paths import check_folder_target
from ._records import check_key_names
from ._tensorboard_summary import check_hparams

__all__ = ["Options", "check_options"]


@dataclass(frozen=True)
class Options:
    caller: str
    log_dir: str | None
    writer: Any
    keys: tuple[str, ...] | None
    every: int
    hparams: dict[str, bool | int | float | str] | None
    all_hparams: bool
    per_member: bool = False


def check_options(
    caller: str,
    *,
    log_dir: object,
    writer: object,
    keys: object,
    every: object,
    hparams: object,
    all_hparams: object = False,
    per_member: object = False,
) -> Options:
    require("tensorboard", "tensorboard", feature=caller)
    require("torch.utils.tensorboard", "tensorboard", feature=caller)
    if log_dir is not None and writer is not None:
        raise ValueError(
            f"{caller}: pass log_dir or writer, not both (got log_dir={log_dir!r:.80} and "
            f"writer={writer!r:.80})"
        )
    if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
        raise TypeError(
            f"{caller}: log_dir must be a folder path (str or os.PathLike) or None, got "
            f"{type(log_dir).__name__}: {log_dir!r:.80}"
        )
    if log_dir is not None:
        check_folder_target(Path(log_dir), func=caller, arg="log_dir")
    needed = ["add_scalar", "add_custom_scalars", "flush", "get_logdir"]
    if hparams is not None:
        needed.append("_get_file_writer")
    if writer is not None and not all(callable(getattr(writer, m, None)) for m in needed):
        raise TypeError(
            f"{caller}: writer must be an open torch.utils.tensorboard.SummaryWriter (e.g. a "
            f"Lightning TensorBoardLogger's .experiment), got {type(writer).__name__}: "
            f"{writer!r:.80}"
        )
    check_positive_int(every, func=caller, arg="every")
    check_bool(all_hparams, func=caller, arg="all_hparams")
    check_bool(per_member, func=caller, arg="per_member")
    return Options(
        caller=caller,
        log_dir=None if log_dir is None else str(os.fspath(log_dir)),
        writer=writer,
        keys=check_key_names(keys, name="keys", caller=caller),
        every=every,  # type: ignore[arg-type]
        hparams=check_hparams(hparams, caller=caller),
        all_hparams=bool(all_hparams),
        per_member=bool(per_member),
    )
