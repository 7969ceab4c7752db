"""How stages and sinks recognise an ensemble's events and their per-member values.

:func:`fitstream.ensemble_stream` puts its ensemble under the event's ``model`` key. Stages
and sinks never import the source: they recognise the ensemble by the interface below
(:class:`EnsembleLike`), so a test can hand them a stand-in.

A per-member value is a ``list`` of K numbers in the order of the ensemble's members, e.g.
``train_loss == [0.31, 0.29, 0.40]`` for K = 3.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, runtime_checkable

__all__ = ["EnsembleLike", "ensemble_of", "is_ensemble", "is_per_member", "member_labels"]


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


_INTERFACE = ("members", "hparams", "active", "freeze", "__len__")
_MISSING = object()


def is_ensemble(obj: object) -> TypeGuard[EnsembleLike]:
    """Whether ``obj`` has the interface of :class:`EnsembleLike`, without reading it.

    ``isinstance(obj, EnsembleLike)`` does the same, but before Python 3.12 it reads every
    property to see that it is there: an ensemble's ``hparams`` reads every member's optimizer
    (0.4 ms for 128 members, at each stage that asked). Here a name is looked up on the class
    and the instance first (``inspect.getattr_static``), and read only where it is not found
    so (an ``nn.Module``'s submodule, say).

    Example:
        >>> class Pair:
        ...     members, active = ("a", "b"), (True, True)
        ...     @property
        ...     def hparams(self):
        ...         raise AssertionError("not read")
        ...     def freeze(self, member): ...
        ...     def __len__(self): return 2
        >>> is_ensemble(Pair()), is_ensemble(object())
        (True, False)
    """
    if obj is None:
        return False
    return all(
        inspect.getattr_static(obj, name, _MISSING) is not _MISSING or hasattr(obj, name)
        for name in _INTERFACE
    )


def ensemble_of(event: Mapping[str, Any]) -> EnsembleLike | None:
    """Return the event's ensemble, or ``None`` for an event of a single model.

    Example:
        >>> ensemble_of({"step": 1, "model": None}) is None
        True
    """
    model = event.get("model")
    return model if is_ensemble(model) else None


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


def _shown(value: object) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return "".join("_" if c in "/\\ \t\n" else c for c in text)


def differing_keys(hparams: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hyperparameters whose values differ between members, in the order they appear.

    A name some members lack differs too. It is the one rule for what tells members apart,
    used to name them and to fill TensorBoard's HParams table.

    Example:
        >>> differing_keys([{"lr": 0.1, "eps": 1e-8}, {"lr": 0.01, "eps": 1e-8, "fold": 1}])
        ['lr', 'fold']
    """
    keys: dict[str, None] = {}
    for own in hparams:
        keys.update(dict.fromkeys(own))
    missing = object()
    return [key for key in keys if len({repr(own.get(key, missing)) for own in hparams}) > 1]


def member_labels(
    hparams: Sequence[Mapping[str, Any]], fallback: Callable[[int], str]
) -> list[str]:
    """Name each member by the hyperparameters that tell it apart: ``lr=0.01,fold=2``.

    Only the hyperparameters whose values differ between members are named, in the order
    they first appear (the optimizer's, then those given to ``ensemble_stream(hparams=...)``).
    Floats are written as with ``format(value, "g")``; slashes and spaces become ``_`` so a
    name can be a folder's. When nothing tells the members apart, each is named
    ``fallback(k)``; when some members share every value, ``fallback(k)`` comes first.

    Example:
        >>> member_labels([{"lr": 0.01, "fold": 0}, {"lr": 0.01, "fold": 1}], str)
        ['fold=0', 'fold=1']
        >>> member_labels([{"lr": 0.1}, {"lr": 0.1}], lambda k: f"member_{k:02d}")
        ['member_00', 'member_01']
        >>> member_labels([{"lr": 0.1}, {"lr": 0.1}, {"lr": 1e-5}], str)
        ['0,lr=0.1', '1,lr=0.1', '2,lr=1e-05']
    """
    differ = differing_keys(hparams)
    if not differ:
        return [fallback(k) for k in range(len(hparams))]
    names = [
        ",".join(f"{key}={_shown(own[key])}" for key in differ if key in own) for own in hparams
    ]
    if len(set(names)) < len(names):
        names = [f"{fallback(k)},{name}" for k, name in enumerate(names)]
    return names
