"""The ensemble source: K models of one architecture trained together, one event per epoch."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..._internal.rows import check_rows, row_counts
from ..._internal.starts import offer_frozen_at_start
from ...events import Event
from .._shared import check_fit, check_run
from ..step_options import check_step_options
from .member_checks import check_generators, check_hooks, check_models, check_optimizers
from .member_data import check_member_hparams
from .optim import vectorised_kind
from .training import train_epochs

__all__ = ["ensemble_stream"]

_FUNC = "ensemble_stream"


def ensemble_stream(
    train_data: Sequence[torch.Tensor],
    models: Sequence[nn.Module],
    optimizers: Sequence[torch.optim.Optimizer],
    loss_fn: Callable[..., torch.Tensor],
    *,
    batch_size: int = 1,
    shuffle: bool = True,
    last_label: bool = True,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    extra: Mapping[str, Any] | None = None,
    step_offset: int = 0,
    cuda_graphs: bool = False,
    rows: Sequence[torch.Tensor] | None = None,
    hparams: Sequence[Mapping[str, str | int | float | bool]] | None = None,
    clip_grad_norm: float | None = None,
    clip_grad_value: float | None = None,
    accumulate: int = 1,
    autocast: torch.dtype | None = None,
    schedulers: Sequence[Any] | None = None,
    train_metrics: Mapping[str, Any] | None = None,
) -> Iterator[Event]:
    """Train K models of one architecture together on the same data, one event per epoch.

    Member ``k`` trains exactly as :func:`~fitstream.epoch_stream` would train ``models[k]``
    with ``optimizers[k]`` on the same data order, but all members take each step together: their
    weights are stacked on a leading member dimension and every batch runs one vectorised
    forward, backward and optimizer step for all of them. For a small model this costs little
    more than training one, so a sweep of seeds or learning rates runs in about the time of a
    single run. The data is shared by the members, never copied per member.

    Every argument is checked when ``ensemble_stream`` is called; training starts at the first
    ``next()`` and each ``next()`` runs one epoch. The stream never ends by itself.

    Each event holds ``step`` and ``train_time_sec`` as for :func:`~fitstream.epoch_stream`,
    ``train_loss`` as a list of K floats (member ``k``'s mean loss at position ``k``, one
    host-device synchronisation per epoch), ``model`` (the :class:`~fitstream.Ensemble`; its
    ``members`` are ``models``, its ``hparams`` each member's hyperparameters), ``optimizer``
    (the list ``optimizers``), ``lr`` (a list with member ``k``'s learning rate at position
    ``k``: a float, or a list of one per param group when it has several), ``active`` (a
    list of K bools: whether member ``k`` trained in this epoch; ``False`` once it was frozen
    before the epoch began, so its values are those of kept weights) and every entry of
    ``extra``. While the consumer holds an event, ``models[k]`` holds member ``k``'s current
    weights: its parameters are views into the stacked weights, so evaluating, copying or
    loading a state dict into ``models[k]`` acts on the member itself. ``model.freeze(k)`` stops
    member ``k``'s updates from the next epoch (its ``train_loss`` is then that of its kept
    weights).

    Optimizers: ``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay), ``Adam`` and
    ``AdamW`` (amsgrad) take one vectorised step for all members; each member's hyperparameters
    are read from ``optimizers[k].param_groups`` at the start of every epoch, so changing
    ``param_groups[g]["lr"]`` between epochs takes effect at the next one. Their state is
    stacked like the weights, and while the consumer holds an event ``optimizers[k].state``
    holds member ``k``'s in torch's own format (its tensors views into the stacked state), so
    ``optimizers[k].state_dict()`` is what training member ``k`` alone would give. State the
    optimizers already hold (from an earlier stream, or loaded by ``load_state_dict``, as
    :func:`~fitstream.resume` does) is taken in at the start of each epoch, so a new stream
    continues where the last one stopped. Several param groups are allowed when every member
    groups the same parameters. Any other optimizer class is stepped one member at a time on
    the vectorised gradients (correct, slower; a ``UserWarning`` says so once, at the call).

    Args:
        train_data: Tensors sharing their first (sample) dimension, e.g. ``(X, y)``, on the
            models' device.
        models: The members: modules of one architecture (the same module tree and parameter
            and buffer names, shapes and dtypes) on one device, sharing no tensors. Modules
            with running statistics (BatchNorm) are refused.
        optimizers: ``optimizers[k]`` over ``models[k]``'s parameters, one per model.
        loss_fn: Called per member as ``loss_fn(member(*inputs), labels)`` when ``last_label``
            is true, else as ``loss_fn(member(*train_data))``; returns a scalar tensor. It runs
            under ``torch.func.vmap`` (ordinary tensor code works; ``.item()`` does not).
        batch_size: Rows per mini-batch; the last batch of an epoch may be shorter.
        shuffle: Whether to visit the rows in a new random order each epoch (one order shared
            by all members, drawn as :func:`~fitstream.epoch_stream` draws it).
        last_label: Whether the last tensor of ``train_data`` holds the labels.
        generator: Random source for the shuffle, for reproducible runs; or a list of K
            generators, one per member, to give each member its own data order (member ``k``
            then sees the order ``epoch_stream`` would draw from ``generator[k]``; each batch is
            gathered per member, K times the batch instead of one shared batch).
        extra: Constant entries added to every event.
        step_offset: Added to ``step``.
        cuda_graphs: On a CUDA device, capture the whole vectorised step of all members
            (forward, losses, backward, optimizer step, the frozen members' weights put back)
            once as a CUDA graph and replay it for every batch, as
            :func:`~fitstream.epoch_stream` does with ``cuda_graphs=True``: the same events and
            numbers per member (to rounding). The members' hyperparameters live in device
            tensors the graph reads, so a changed ``lr``, ``weight_decay``, ``momentum`` or
            ``betas`` in ``param_groups`` takes effect at the next epoch without a new capture
            (unless it turns an option on or off, such as a momentum becoming non-zero), and
            ``models[k].load_state_dict`` writes into the weights the graph reads.
            ``freeze(k)`` captures again. Needs the vectorised SGD/Adam/AdamW step; other
            optimizers are refused at the call. A step that cannot be captured raises a
            ``RuntimeError`` at the first ``next()`` saying what to change, with the members
            and their optimizer state left as they were.
        rows: One 1-D integer tensor per member: member ``k`` trains on the rows
            ``rows[k]`` of ``train_data`` (a fold's train part from :func:`~fitstream.kfold`, a
            bootstrap sample from :func:`~fitstream.bootstrap`), exactly as
            :func:`~fitstream.epoch_stream` would train ``models[k]`` on
            ``[t[rows[k]] for t in train_data]``. Rows may repeat, and the members' row counts
            may differ: a member with fewer rows takes fewer optimizer steps per epoch (its
            last batch may be short), and at a step where it has no batch, or one of another
            size, it is held: its weights and optimizer state do not move. Each batch is
            gathered per member from ``train_data``, never a copy of the data per member.
            With ``shuffle=True`` member ``k`` visits its rows in the order
            ``rows[k][torch.randperm(len(rows[k]), generator=g)]``: ``g`` is ``generator[k]``
            for a list of generators (the order its lone run draws), else the one
            ``generator`` from which the K permutations are drawn in member order. Without
            shuffling, in the order given. With ``cuda_graphs=True`` the row counts must be
            equal.
        hparams: One dict per member of plain values (str, int, float, bool) naming its
            setting, such as ``{"fold": 2}`` or ``{"seed": 0, "width": 32}``. They are added to
            ``Ensemble.hparams[k]`` after the optimizer's own (whose names, such as ``lr``,
            they may not reuse), and so reach every sink: :func:`~fitstream.collect` records,
            :func:`~fitstream.collect_pd` columns, TensorBoard's HParams and run folders,
            plot legends and :func:`~fitstream.progress`, which name each member by the
            hyperparameters that differ between members (``lr=0.01,fold=2``), and
            :func:`~fitstream.summarize`, which groups members by them.

        clip_grad_norm: Before each optimizer step, scale member ``k``'s gradients so that
            their total norm over its own parameters is at most this, as
            ``torch.nn.utils.clip_grad_norm_`` would in its lone :func:`~fitstream.epoch_stream`
            run. Captured in the CUDA graph with ``cuda_graphs=True``.
        clip_grad_value: Before each optimizer step, clamp every member's gradient values to
            ``[-clip_grad_value, clip_grad_value]``. One of the two clipping keywords at most.
        accumulate: One optimizer step per ``accumulate`` batches for every member, as
            :func:`~fitstream.epoch_stream` takes it (each loss divided by ``accumulate``, the
            epoch's last group stepped short); the members' ``rows`` must then be of equal
            counts.
        autocast: ``torch.bfloat16``: the members' forward and ``loss_fn`` under
            ``torch.autocast`` (CPU and CUDA). Each member then matches its lone run within
            bfloat16's rounding (about 1e-2 relative), not float32's: the vectorised matmuls
            round apart from one model's. ``torch.float16`` is refused: its loss scaling
            would skip steps member by member.
        schedulers: One torch LR scheduler per member, over ``optimizers[k]``, stepped after
            each of member ``k``'s optimizer steps (not while it is held or frozen), so member
            ``k`` follows its own schedule as alone. The event's ``lr[k]`` is the rate of
            member ``k``'s last step; its ``hparams`` keep the rate its schedule started from
            (``initial_lr``). A stream with schedulers takes no new member by
            ``Ensemble.replace``.
        train_metrics: Metrics of the training batches, as for
            :func:`~fitstream.epoch_stream`, per member: ``train_<name>`` is a list with
            member ``k``'s value at position ``k`` (a plain callable runs once per batch for
            all members under ``torch.func.vmap`` where it can, else member by member; a
            stateful metric is copied per member). Read back with the losses, in one host
            synchronisation.

    Returns:
        An endless iterator of :class:`~fitstream.Event` dicts.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For everything :func:`~fitstream.epoch_stream` refuses, no models, models
            that differ in architecture (the first differing module, parameter or buffer is
            named), models on different devices or sharing tensors, a BatchNorm with running
            statistics, ``len(optimizers) != len(models)``, an optimizer not over its own
            model's parameters, a forward or backward hook on a member, an optimizer step hook
            that the vectorised SGD/Adam/AdamW step would never call (the hook is named),
            param groups that differ between members, or
            ``cuda_graphs=True`` with data or models off CUDA or optimizers that have no
            vectorised step. For ``rows``: not one per member, not 1-D, not integer, empty,
            out of the data's range or on another device (unequal counts with
            ``cuda_graphs=True``). For ``hparams``: not one dict per member, a value that is
            not plain, or a name the optimizer already reports (``lr``...) or the events use
            (``step``, ``member``...). For the step options, what
            :func:`~fitstream.epoch_stream` refuses, ``len(schedulers) != len(optimizers)``,
            a scheduler over another member's optimizer (named), ``accumulate > 1`` with
            unequal row counts, and ``autocast=torch.float16``.

    Example:
        >>> from itertools import islice
        >>> X = torch.randn(64, 3)
        >>> y = X @ torch.tensor([1.0, -2.0, 0.5])
        >>> models = [nn.Linear(3, 1) for _ in range(4)]
        >>> optimizers = [torch.optim.SGD(m.parameters(), lr=lr)
        ...               for m, lr in zip(models, [0.01, 0.03, 0.1, 0.3])]
        >>> loss_fn = lambda pred, target: nn.functional.mse_loss(pred.squeeze(-1), target)
        >>> events = ensemble_stream((X, y), models, optimizers, loss_fn, batch_size=16)
        >>> last = list(islice(events, 10))[-1]
        >>> last["step"], len(last["train_loss"]), last["model"].hparams[3]["lr"]
        (10, 4, 0.3)
        >>> last["train_loss"][0] > last["train_loss"][2]
        True
    """
    tensors, constants = check_run(
        train_data,
        loss_fn,
        batch_size=batch_size,
        shuffle=shuffle,
        last_label=last_label,
        extra=extra,
        step_offset=step_offset,
        func=_FUNC,
    )
    members = check_models(models, func=_FUNC)
    opts = check_optimizers(optimizers, members, func=_FUNC)
    graphed = check_fit(tensors, members[0], opts[0], cuda_graphs, func=_FUNC)
    generators = check_generators(generator, tensors[0].device, len(members), func=_FUNC)
    member_rows = check_rows(
        rows,
        tensors[0].shape[0],
        tensors[0].device,
        members=len(members),
        func=_FUNC,
        data="train_data",
    )
    if graphed and member_rows is not None and len(set(row_counts(member_rows))) > 1:
        raise ValueError(
            f"{_FUNC}: cuda_graphs=True needs every member to have as many 'rows' as the "
            f"others (one graph per batch size), got {sorted(set(row_counts(member_rows)))} "
            "rows; pass cuda_graphs=False, or give the members equal row counts"
        )
    settings = check_member_hparams(hparams, opts, func=_FUNC)
    options = check_step_options(
        clip_grad_norm=clip_grad_norm,
        clip_grad_value=clip_grad_value,
        accumulate=accumulate,
        autocast=autocast,
        schedulers=schedulers,
        train_metrics=train_metrics,
        optimizers=opts,
        device=tensors[0].device,
        extra=constants,
        cuda_graphs=graphed,
        ensemble=True,
        func=_FUNC,
        last_label=bool(last_label),
    )
    if options.accumulate > 1 and member_rows is not None:
        counts = sorted(set(row_counts(member_rows)))
        if len(counts) > 1:
            raise ValueError(
                f"{_FUNC}: accumulate={options.accumulate} needs every member to have as many "
                f"'rows' as the others (their step groups would end at different batches), "
                f"got {counts} rows; give the members equal row counts, or accumulate=1"
            )
    kind, reason = vectorised_kind(opts)
    check_hooks(members, opts, vectorised=kind is not None, func=_FUNC)
    if kind is None and graphed:
        raise ValueError(
            f"{_FUNC}: cuda_graphs=True needs the vectorised optimizer step (SGD, Adam or AdamW "
            f"optimizers), but {reason}; pass cuda_graphs=False to step each member's "
            "optimizer on its own"
        )
    if kind is None:
        warnings.warn(
            f"{_FUNC}: {reason}; each member's optimizer steps on its own, K step() calls "
            f"per batch (slower than the vectorised SGD/Adam/AdamW)",
            UserWarning,
            stacklevel=2,
        )
    frozen: list[int] = []
    stream = train_epochs(
        tensors,
        members,
        opts,
        kind,
        loss_fn,
        batch_size=batch_size,
        shuffle=bool(shuffle),
        last_label=bool(last_label),
        generator=generators,
        constants=constants,
        step_offset=step_offset,
        cuda_graphs=graphed,
        rows=member_rows,
        settings=settings,
        frozen=frozen,
        options=options,
    )
    offer_frozen_at_start(stream, frozen)  # fitstream.resumable may fill it before the start
    return stream
