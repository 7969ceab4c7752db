"""Checks of the files and folders a sink will write, made at the call instead of at the write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_file_target", "check_folder_target", "check_open_for_writing"]


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path``'s parents (``path`` itself excluded) that exists."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.absolute().anchor)  # pragma: no cover - the root always exists


def _check_can_create_in(path: Path, *, func: str, arg: str) -> None:
    """Refuse ``path`` when a missing folder above it cannot be created, or is a file."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise NotADirectoryError(
            f"{func}: {arg} {str(path)!r} cannot be created: {str(ancestor)!r} is a file, "
            f"not a folder"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{func}: {arg} {str(path)!r} cannot be written: no permission to write in "
            f"{str(ancestor)!r}"
        )
    _probe(ancestor, path, func=func, arg=arg)


def _probe(folder: Path, path: Path, *, func: str, arg: str) -> None:
    """Make and remove an empty folder in ``folder``: what permissions alone do not tell.

    ``os.access`` says yes to root everywhere, and on filesystems that take no new folders
    (``/proc``, a read-only mount seen by root); a folder made and removed at once tells.
    """
    try:
        made = tempfile.mkdtemp(prefix=".fitstream-probe-", dir=folder)
    except OSError as exc:
        raise PermissionError(
            f"{func}: {arg} {str(path)!r} cannot be written: {str(folder)!r} takes no new "
            f"folder ({exc.strerror or exc})"
        ) from None
    os.rmdir(made)


def check_folder_target(path: Path, *, func: str, arg: str) -> None:
    """Refuse a folder to write into that is a file, lies under a file, or is not writable.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as file:
        ...     check_folder_target(Path(file.name) / "run", func="log_tensorboard", arg="log_dir")
        Traceback (most recent call last):
        ...
        NotADirectoryError: log_tensorboard: log_dir '...' cannot be created: '...' is a file, ...
    """
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{func}: {arg} {str(path)!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{func}: {arg} {str(path)!r} is a folder you cannot write in")
        _probe(path, path, func=func, arg=arg)
        return
    _check_can_create_in(path, func=func, arg=arg)


def check_file_target(path: Path, *, func: str, arg: str) -> None:
    """Refuse a file to write that is a folder, lies under a file, or is not writable.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     check_file_target(Path(folder), func="plot_history", arg="save")
        Traceback (most recent call last):
        ...
        IsADirectoryError: plot_history: save '...' is a folder; give the path of a file, ...
    """
    if path.is_dir():
        raise IsADirectoryError(
            f"{func}: {arg} {str(path)!r} is a folder; give the path of a file, e.g. one in "
            f"that folder"
        )
    if path.exists():
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{func}: {arg} {str(path)!r} is a file you cannot write")
        return
    _check_can_create_in(path, func=func, arg=arg)


def check_open_for_writing(file: object, *, func: str, arg: str) -> None:
    """Refuse an open file (text stream) given to write into that is closed or read-only.

    Example:
        >>> import io
        >>> closed = io.StringIO()
        >>> closed.close()
        >>> check_open_for_writing(closed, func="progress", arg="file")
        Traceback (most recent call last):
        ...
        ValueError: progress: file is a closed file: ...
    """
    if getattr(file, "closed", False) is True:
        raise ValueError(f"{func}: {arg} is a closed file: {file!r:.80}")
    writable = getattr(file, "writable", None)
    if callable(writable) and not writable():
        raise ValueError(
            f"{func}: {arg} is not open for writing (mode {getattr(file, 'mode', '?')!r}): "
            f"{file!r:.80}; open it with 'w' or 'a'"
        )
