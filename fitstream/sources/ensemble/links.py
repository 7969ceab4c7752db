"""Keeping the members' own modules in step with the ensemble between epochs.

A member's tensors are views into the ensemble's slabs (:mod:`.stacking`). Between two epochs
the user holds the members: :func:`check_links` refuses to train on once a member's tensor was
replaced (cast, moved), and :func:`keep_frozen_as_they_are` makes a frozen member keep the
weights it was given (a ``load_state_dict``) instead of those it was frozen with.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch

from .stacking import Ensemble

__all__ = ["check_links", "keep_frozen_as_they_are"]


# per ensemble, its members' tensors as they were when the links last held (see _tensors)
_HELD: weakref.WeakKeyDictionary[Ensemble, list[tuple[Any, ...]]] = weakref.WeakKeyDictionary()


def check_links(ensemble: Ensemble, *, func: str) -> None:
    """Refuse to train on when a member's tensor is no longer its view into the stack.

    ``.double()``, ``.to(...)``, a re-parametrisation or assigning a new tensor replaces a
    member's tensor: the member would silently stop following its training. Once the links
    held, the members' tensors are recorded (memory, dtype, shape, in module order); while
    they are the same, the links still hold, and the check by name is skipped (it took 3.4 ms
    of a 110 ms epoch for 128 members).
    """
    now = _tensors(ensemble)
    if _HELD.get(ensemble) == now:
        return
    _check_by_name(ensemble, func)
    _HELD[ensemble] = now


def _tensors(ensemble: Ensemble) -> list[tuple[Any, ...]]:
    """The stack's memory, then each member's parameters' and buffers' (with dtype, shape)."""
    stack = tuple(slab.data.data_ptr() for slab in ensemble._slabs)
    return [stack] + [
        tuple(
            (t.data_ptr(), t.dtype, t.shape)
            for t in itertools.chain(member.parameters(), member.buffers())
        )
        for member in ensemble._members
    ]


def _check_by_name(ensemble: Ensemble, func: str) -> None:
    """Every member tensor the stack holds, looked up by name and compared with its view."""
    for slab in ensemble._slabs:
        for row, member in enumerate(ensemble._members):
            for i, name in enumerate(slab.names):
                expected = slab.member_view(row, i)
                try:
                    found = (
                        member.get_buffer(name) if slab.group == -1 else member.get_parameter(name)
                    )
                except AttributeError:
                    found = None
                if (
                    found is None
                    or found.data_ptr() != expected.data_ptr()
                    or found.dtype != expected.dtype
                    or found.shape != expected.shape
                ):
                    what = "buffer" if slab.group == -1 else "parameter"
                    now = "gone" if found is None else f"{found.dtype} on {found.device}"
                    raise RuntimeError(
                        f"{func}: models[{row}]'s {what} {name!r} is no longer its view "
                        f"into the ensemble (it is now {now}; the ensemble keeps "
                        f"{expected.dtype} on {expected.device}): it was cast, moved or "
                        f"replaced after the stream started (.double(), .to(), a "
                        f"re-parametrisation), so the member would stop following its "
                        f"training. Build the members with the dtype and device they train "
                        f"with, and change their weights in place or by load_state_dict"
                    )


def keep_frozen_as_they_are(ensemble: Ensemble) -> None:
    """Make the frozen members' current weights (a ``load_state_dict``, say) the kept ones."""
    rows = ensemble._frozen_rows
    if rows is None:
        return
    with torch.no_grad():
        for slab, saved in zip(ensemble._trainable_slabs(), ensemble._frozen_saved, strict=True):
            saved.copy_(slab.data[rows])
