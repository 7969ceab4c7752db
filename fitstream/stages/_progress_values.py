"""What the progress bar shows of an event: each named key's value, and what follows it.

One model's value is its number (``val_loss=0.3127``); an ensemble's is the best member still
training (``val_loss=0.3127 (best: lr=0.01)``), or, when its members carry a ``fold``, the best
setting's mean over its folds (``val_acc=0.9612 (best: lr=0.01, 5 folds)``). :func:`fit` puts
them on a line of limited width without ever dropping a named key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._internal.direction import infer_mode
from .._internal.members import ensemble_of, is_per_member, member_labels
from .._internal.values import scalar_value

__all__ = ["ACTIVE", "bar_values", "compact", "fit", "member_text", "needed", "setting_text"]


def compact(value: int | float | bool) -> str:
    """Format a number briefly: ints and bools as they are, floats with 4 significant digits.

    Example:
        >>> compact(3), compact(0.123456), compact(12345.678), compact(float("nan"))
        ('3', '0.1235', '1.235e+04', 'nan')
    """
    if isinstance(value, bool | int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


ACTIVE = "\0active"  # the postfix entry of an ensemble's still-training members


def fit(cores: dict[str, str], notes: dict[str, str], keys: tuple[str, ...], room: int) -> str:
    """The values on the bar within ``room`` columns: every key's value, in the order given.

    A value always shows (``val_acc=0.97``); what follows it (``(best: lr=0.01,fold=2)``) shows
    while it fits, shortened first to its leading items (``(best: lr=0.01…)``), and goes when
    not even those fit, so a key further on is never cut off by the notes of one before it.
    How many members still train comes last, if there is room.

    Example:
        >>> cores = {"val_loss": "val_loss=0.06532", "val_acc": "val_acc=0.9811"}
        >>> notes = {"val_loss": "best: lr=0.01,fold=3"}
        >>> fit(cores, notes, ("val_loss", "val_acc"), 80)
        'val_loss=0.06532 (best: lr=0.01,fold=3), val_acc=0.9811'
        >>> fit(cores, notes, ("val_loss", "val_acc"), 50)
        'val_loss=0.06532 (best: lr=0.01…), val_acc=0.9811'
        >>> fit(cores, notes, ("val_loss", "val_acc"), 30)
        'val_loss=0.06532, val_acc=0.9811'
    """
    named = [k for k in keys if k in cores]
    spare = room - len(", ".join(cores[k] for k in named))
    shown = {k: cores[k] for k in named}
    for key in named:
        text = _shortened(notes.get(key, ""), spare)
        shown[key] += text
        spare -= len(text)
    parts = [shown[k] for k in named]
    if ACTIVE in cores and len(cores[ACTIVE]) + 2 <= spare:
        parts.append(cores[ACTIVE])
    return ", ".join(parts)


def needed(cores: dict[str, str], keys: tuple[str, ...]) -> int:
    """The columns the named keys' values take, notes left out: what the line must hold.

    Example:
        >>> needed({"val_loss": "val_loss=0.3", "lr": "lr=0.1"}, ("val_loss", "lr", "x"))
        20
    """
    return len(", ".join(cores[k] for k in keys if k in cores))


def _shortened(note: str, room: int) -> str:
    """`` (note)`` in at most ``room`` columns: whole, or cut after an item (``,`` or ``;``).

    Example:
        >>> _shortened("best: lr=0.01,fold=3", 30), _shortened("best: lr=0.01,fold=3", 18)
        (' (best: lr=0.01,fold=3)', ' (best: lr=0.01…)')
        >>> _shortened("best: lr=0.3", 10)  # nothing worth reading fits
        ''
    """
    if not note:
        return ""
    if len(note) + 3 <= room:
        return f" ({note})"
    cuts = [i for i, char in enumerate(note) if char in ",;" and i + 4 <= room]
    return f" ({note[: cuts[-1]]}…)" if cuts else ""


def member_text(
    key: str, values: list[float], active: Sequence[bool], names: list[str]
) -> tuple[str, str]:
    """How the bar shows a per-member value: ``(value, note)``, the best member still training.

    The best is the smallest for a key the direction rule reads as a loss, the largest for an
    accuracy or a score; a key that tells neither shows its range instead of a guessed best.
    A stopped member that did better than every training one is named in the note.

    Example:
        >>> member_text("val_loss", [0.5, 0.2, 0.4], [True, False, True], ["a", "b", "c"])
        ('val_loss=0.4', 'best: c; b stopped at 0.2')
        >>> member_text("val_acc", [0.5, 0.9], [True, True], ["a", "b"])
        ('val_acc=0.9', 'best: b')
        >>> member_text("lr", [0.1, 0.01], [True, True], ["a", "b"])
        ('lr=0.01..0.1', '')
    """
    finite = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        return f"{key}=nan", ""
    mode = infer_mode(key)
    if mode is None:
        low, high = min(values[i] for i in finite), max(values[i] for i in finite)
        return f"{key}={compact(low)}..{compact(high)}", ""
    pick = min if mode == "min" else max

    def which(i: int) -> str:
        return names[i] if i < len(names) else f"member {i}"

    best = pick(finite, key=lambda i: values[i])
    training = [i for i in finite if i >= len(active) or active[i]]
    if not training:  # every member with a number has stopped
        return f"{key}={compact(values[best])}", f"best: {which(best)}, stopped"
    leader = pick(training, key=lambda i: values[i])
    note = f"best: {which(leader)}"
    if values[best] != values[leader]:
        note += f"; {which(best)} stopped at {compact(values[best])}"
    return f"{key}={compact(values[leader])}", note


def setting_text(
    key: str, values: list[float], hparams: Sequence[Mapping[str, Any]]
) -> tuple[str, str] | None:
    """For members that carry a ``fold``: the best setting's mean over its folds, else None.

    Example:
        >>> hp = [{"lr": 0.1, "fold": 0}, {"lr": 0.1, "fold": 1},
        ...       {"lr": 0.01, "fold": 0}, {"lr": 0.01, "fold": 1}]
        >>> setting_text("val_acc", [0.9, 0.8, 0.95, 0.97], hp)
        ('val_acc=0.96', 'best: lr=0.01, 2 folds')
    """
    mode = infer_mode(key)
    if mode is None or not hparams or not all("fold" in h for h in hparams):
        return None
    settings: dict[tuple[Any, ...], list[float]] = {}
    labels: dict[tuple[Any, ...], dict[str, Any]] = {}
    for own, value in zip(hparams, values, strict=False):
        setting = {k: v for k, v in own.items() if k != "fold"}
        group = tuple(sorted(setting.items(), key=lambda item: item[0]))
        settings.setdefault(group, []).append(value)
        labels[group] = setting
    means = {g: math.fsum(v) / len(v) for g, v in settings.items() if not any(map(math.isnan, v))}
    if not means or len(settings) < 2:
        return None
    best = (min if mode == "min" else max)(means, key=lambda g: means[g])
    names = member_labels([labels[g] for g in means], lambda k: f"setting {k}")
    name = names[list(means).index(best)]
    return f"{key}={compact(means[best])}", f"best: {name}, {len(settings[best])} folds"


def bar_values(
    event: dict[str, Any], keys: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """The value of each key the event has a number for, and what follows it on the bar.

    For K members, the best member (or, members with folds, the best setting's mean).
    """
    shown: dict[str, str] = {}
    notes: dict[str, str] = {}
    ensemble = ensemble_of(event)
    hparams = [] if ensemble is None else list(ensemble.hparams)
    names: list[str] | None = None
    for key in keys:
        value = event.get(key)
        if isinstance(value, list) and is_per_member(value):
            numbers = [float(v) for v in value]
            found = setting_text(key, numbers, hparams)
            if found is None:
                if names is None:
                    fallback = lambda k: f"member {k}"  # noqa: E731
                    names = member_labels(hparams, fallback) if hparams else []
                active = () if ensemble is None else ensemble.active
                found = member_text(key, numbers, active, names)
            shown[key], notes[key] = found
            continue
        number = scalar_value(value)
        if number is not None:
            shown[key] = f"{key}={compact(number)}"
    if ensemble is not None and not all(ensemble.active):
        shown[ACTIVE] = f"{sum(map(bool, ensemble.active))}/{len(ensemble)} training"
    return shown, notes
