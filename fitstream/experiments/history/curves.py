"""One member's values of a key over its steps, and the grouping of members by setting."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..._internal.checks import check_name, check_strings, describe

__all__ = ["Curve", "check_names", "group_curves", "number"]


@dataclass(frozen=True)
class Curve:
    """One member's values of a key: ``values[i]`` at ``steps[i]``, and its hyperparameters.

    ``member`` numbers the curves of a history in order; ``fold`` is the member's fold when
    it has one (its hyperparameter ``fold``), what pairs it with the same fold of another
    setting.
    """

    member: int
    hparams: Mapping[str, Any]
    steps: list[float]
    values: list[float]

    @property
    def fold(self) -> Any:
        """The member's ``fold`` hyperparameter, or None."""
        return self.hparams.get("fold")


def number(value: object) -> float:
    """A value as a float: NaN for None, bools, strings and what does not convert.

    Example:
        >>> number(3), number(None), number("0.5"), number(True)
        (3.0, nan, nan, nan)
    """
    if value is None or isinstance(value, bool | str | bytes):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def check_names(names: object, *, func: str, arg: str) -> tuple[str, ...]:
    """The hyperparameter names to group by: one name, or a non-empty list of names.

    Example:
        >>> check_names("lr", func="f", arg="by"), check_names(["lr", "width"], func="f", arg="by")
        (('lr',), ('lr', 'width'))
    """
    if isinstance(names, str):
        check_name(names, func=func, what=f"'{arg}'")
        return (names,)
    if not isinstance(names, list | tuple) or not names:
        raise TypeError(
            f"{func}: '{arg}' must be a hyperparameter name or a non-empty list of names (such "
            f"as 'lr' or ['lr', 'width']), got {describe(names)}"
        )
    check_strings(names, func=func, arg=arg)
    return tuple(names)


def group_curves(
    curves: Sequence[Curve], by: Sequence[str], *, func: str, arg: str = "by"
) -> dict[tuple[Any, ...], list[Curve]]:
    """The curves grouped by the values of the hyperparameters ``by``, in first-seen order.

    Raises:
        KeyError: A name in ``by`` is not a hyperparameter of every member (the message
            lists those the members have).
    """
    have = set(curves[0].hparams)
    for curve in curves[1:]:
        have &= set(curve.hparams)
    missing = [name for name in by if name not in have]
    if missing:
        raise KeyError(
            f"{func}: '{arg}' names {missing}, which not every member has as a hyperparameter; "
            f"the members have {sorted(have)}"
        )
    groups: dict[tuple[Any, ...], list[Curve]] = {}
    for curve in curves:
        groups.setdefault(tuple(curve.hparams[name] for name in by), []).append(curve)
    return groups
