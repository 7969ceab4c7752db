"""The augmenter behind :func:`fitstream.validation_loss` and :func:`fitstream.evaluate`.

:func:`augmenter` builds, once, the chunks of the held-out data (all rows for every member, or
member k's own ``rows[k]``) and returns the function an ``augment`` stage calls per event: it
evaluates the event's model (or every member of its ensemble, in one forward per chunk) without
gradients and in eval mode, restoring each submodule's own train/eval flag however it exits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from .checks import check_same_device, describe, model_device
from .chunks import Chunks, MemberChunks
from .lookup import missing_key_error
from .members import ensemble_of
from .metrics import MetricSpec, prepare_metric
from .rows import check_folds, check_rows, members_folds
from .values import as_float_lists, as_floats

__all__ = ["Augmenter", "augmenter", "evaluation_mode"]

Augmenter = Callable[[Mapping[str, Any]], dict[str, Any]]
"""A function from an event to the keys it adds, as :func:`fitstream.augment` takes."""


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then give every submodule its own flag back.

    ``model.eval()`` switches every submodule; a model may hold submodules in different modes
    (say, a frozen encoder kept in eval mode), so each one's flag is recorded and restored,
    however the block exits.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> model[1].eval()  # a submodule the user keeps in eval mode
        Dropout(p=0.5, inplace=False)
        >>> with evaluation_mode(model):
        ...     [m.training for m in model.modules()]
        [False, False, False]
        >>> [m.training for m in model.modules()]
        [True, True, False]
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        model.train(flags[0][1])  # lets a model's own train() override run
        for module, training in flags:
            if module.training != training:
                module.training = training


def _model_of(event: Mapping[str, Any], func: str) -> nn.Module:
    if not isinstance(event, Mapping):
        raise TypeError(f"{func}: the augmenter expects an event dict, got {describe(event)}")
    if "model" not in event:
        raise missing_key_error(event, "model", func=func)
    model = event["model"]
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: event['model'] must be a torch.nn.Module, got {describe(model)}")
    return model


def _clones(spec: MetricSpec, members: int, kept: dict[str, list[Any]]) -> list[Any]:
    """One copy of a stateful metric per member, made on the first ensemble event (or new K)."""
    copies = kept.get(spec.name)
    if copies is None or len(copies) != members:
        copies = kept[spec.name] = [copy.deepcopy(spec.fn) for _ in range(members)]
    return copies


@contextmanager
def _members_evaluation_mode(model: nn.Module, members: Sequence[Any]) -> Iterator[None]:
    """Eval mode for the ensemble and for any member module outside its module tree.

    The members' flags are recorded first and given back last: an ensemble's own ``train()``
    may set every member to its mode, which must not overwrite a member's own flags.

    An ensemble of MLPs (``Ensemble._mlp``: ``nn.Linear`` layers and elementwise activations,
    none of which reads its flag) runs its own stacked forward, so only its own flag is switched:
    switching and restoring 128 members' modules took 4 ms of a 110 ms epoch.
    """
    if getattr(model, "_mlp", None) is not None:
        flag = model.training
        model.training = False
        try:
            yield
        finally:
            model.training = flag
        return
    inside = {id(module) for module in model.modules()}
    with ExitStack() as stack:
        for member in members:
            if isinstance(member, nn.Module) and id(member) not in inside:
                stack.enter_context(evaluation_mode(member))
        stack.enter_context(evaluation_mode(model))
        yield


def augmenter(
    func: str,
    tensors: Sequence[torch.Tensor],
    specs: Sequence[MetricSpec],
    *,
    last_label: bool,
    batch_size: int | None,
    rows: object,
    folds: object = None,
) -> Augmenter:
    """The augmenter of ``specs`` on ``tensors`` (checked already; ``rows``, ``folds`` here)."""
    chunks = Chunks(tensors, specs, func=func, last_label=last_label, batch_size=batch_size)
    member_rows = check_rows(
        rows, tensors[0].shape[0], tensors[0].device, members=None, func=func, data="val_data"
    )
    held_out = check_folds(folds, tensors, rows=member_rows, func=func)

    def member_chunks(rows: list[torch.Tensor]) -> MemberChunks:
        return MemberChunks(
            tensors, rows, specs, func=func, last_label=last_label, batch_size=batch_size
        )

    fixed = None if member_rows is None else member_chunks(member_rows)
    by_folds: dict[tuple[int, ...], MemberChunks] = {}  # per layout of the members' folds

    def own_chunks(ensemble: Any) -> MemberChunks | None:
        if held_out is None:
            return fixed
        layout = members_folds(ensemble, len(held_out), func=func)
        if layout not in by_folds:
            if len(by_folds) > 64:  # layouts change as a search rebuilds its ensembles
                by_folds.clear()
            by_folds[layout] = member_chunks([held_out[f] for f in layout])
        return by_folds[layout]

    kept: dict[str, list[Any]] = {}  # per-member copies of the stateful metrics

    def augment_event(event: Mapping[str, Any]) -> dict[str, Any]:
        model = _model_of(event, func)
        check_same_device(tensors, model, func=func, arg="val_data")
        device = model_device(model) or tensors[0].device
        ensemble = ensemble_of(event)
        members = None if ensemble is None else len(ensemble)
        if (fixed is not None or held_out is not None) and ensemble is None:
            arg = "rows" if held_out is None else "folds"
            raise TypeError(
                f"{func}: '{arg}' scores each member of an ensemble on its own rows, but "
                f"event['model'] is a single model ({describe(model)}); leave '{arg}' out, or "
                "evaluate an ensemble_stream's events"
            )
        own = None if ensemble is None else own_chunks(ensemble)
        fns = {
            spec.name: [spec.fn]
            if members is None or not spec.stateful
            else _clones(spec, members, kept)
            for spec in specs
        }
        mode = (
            evaluation_mode(model)
            if ensemble is None
            else _members_evaluation_mode(model, ensemble.members)
        )
        with torch.no_grad(), mode:
            for spec in specs:
                if spec.stateful:
                    for fn in fns[spec.name]:
                        prepare_metric(fn, device)
            if own is not None:
                assert ensemble is not None
                values = own.run(model, ensemble.members, fns)
            else:
                values = chunks.run(model, fns, members)
        if members is None:
            return as_floats({name: entries[0] for name, entries in values.items()})
        return as_float_lists(values)

    return augment_event
