"""How stages and sinks recognise an ensemble's events and their per-member values.

:func:`fitstream.ensemble_stream` puts its ensemble under the event's ``model`` key. Stages
and sinks never import the source: they recognise the ensemble by the interface below
(:class:`EnsembleLike`), so a test can hand them a stand-in.

A per-member value is a ``list`` of K numbers in the order of the ensemble's members, e.g.
``train_loss == [0.31, 0.29, 0.40]`` for K = 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["EnsembleLike", "ensemble_of", "is_per_member"]


@runtime_checkable
class EnsembleLike(Protocol):
    """What stages and sinks may rely on in an event's ensemble.

    - ``len(ensemble)`` is K, the number of members;
    - ``members`` are the user's own modules, holding each member's current weights;
    - ``hparams`` is one dict per member of plain scalars (``"optimizer"``, ``"lr"``, ...);
    - ``active`` tells, per member, whether it still trains (``False`` once frozen);
    - ``freeze(k)`` stops all further updates of member ``k`` (idempotent), effective from
      the next epoch: its weights stay those of the event the consumer holds.
    """

    @property
    def members(self) -> Sequence[Any]: ...

    @property
    def hparams(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def active(self) -> Sequence[bool]: ...

    def freeze(self, member: int) -> None: ...

    def __len__(self) -> int: ...


def ensemble_of(event: Mapping[str, Any]) -> EnsembleLike | None:
    """Return the event's ensemble, or ``None`` for an event of a single model.

    Example:
        >>> ensemble_of({"step": 1, "model": None}) is None
        True
    """
    model = event.get("model")
    return model if isinstance(model, EnsembleLike) else None


def is_per_member(value: object) -> bool:
    """Tell whether ``value`` is a per-member value: a non-empty list of numbers.

    Example:
        >>> is_per_member([0.5, 0.25]), is_per_member(0.5), is_per_member([])
        (True, False, False)
    """
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
