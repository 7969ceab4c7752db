"""Augmenters that evaluate the event's model on held-out data.

:func:`validation_loss` and :func:`evaluate` return *augmenters*: functions from an event to a
dict of new keys, used as ``augment(validation_loss(...))``. Each evaluation runs without
gradients, with the model (every submodule) in eval mode, and restores each submodule's own
train/eval flag afterwards, also when the evaluation raises.

On an ensemble's event (``event["model"]`` an ensemble, as :func:`fitstream.ensemble_stream`
gives) each key holds a per-member list of K floats, from one forward pass of the ensemble per
chunk: member k's value equals evaluating ``members[k]`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._internal.callables import check_arity, check_not_a_class, mark_factory
from ._internal.checks import (
    check_bool,
    check_callable,
    check_name,
    check_not_own_key,
    check_positive_int,
    check_tensor_data,
    describe,
)
from ._internal.evaluating import Augmenter, augmenter, evaluation_mode
from ._internal.metrics import MetricSpec, check_metric, is_stateful_metric

__all__ = ["Augmenter", "evaluate", "evaluation_mode", "validation_loss"]


def validation_loss(
    val_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., Any],
    *,
    key: str = "val_loss",
    last_label: bool = True,
    batch_size: int | None = None,
    rows: Sequence[torch.Tensor] | None = None,
    folds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Augmenter:
    """Make an augmenter that adds the loss of the event's model on ``val_data``.

    The returned function takes an event, evaluates ``event["model"]`` without gradients and in
    eval mode (every submodule's own mode is restored afterwards, also on error) and returns
    ``{key: loss}`` with the loss as a Python float. Use it as ``augment(validation_loss(...))``.
    A NaN or infinite loss is reported as it is.

    On an ensemble's event the loss is a per-member list of K floats: the ensemble's forward
    runs once per chunk, giving the members' outputs stacked as ``(K, n, ...)``, and
    ``loss_fn`` is applied to each member's slice, so member k's value equals
    ``validation_loss`` on ``members[k]`` alone (to float rounding: it runs once for all the
    members under ``torch.func.vmap`` where it can, else member by member).

    Args:
        val_data: Tensors with one row per sample, e.g. ``(X_val, y_val)``; they must be on the
            model's device.
        loss_fn: Called as ``loss_fn(pred, labels)`` (``loss_fn(pred)`` when ``last_label`` is
            false); returns a number or a one-element tensor.
        key: The event key for the loss.
        last_label: Whether the last tensor of ``val_data`` holds the labels and the others the
            model's inputs; when false every tensor is an input.
        batch_size: Evaluate in chunks of this many samples instead of one forward pass. The
            chunks' losses are averaged weighted by their sizes, which equals the one-pass value
            for a mean-reduced loss (the usual ``reduction="mean"``), not for a summed one.
        rows: For an ensemble's events: one 1-D integer tensor per member, member ``k``
            scored on the rows ``rows[k]`` of ``val_data`` only (a fold's held-out part, a
            bootstrap's out-of-bag rows), as ``validation_loss`` on ``val_data[rows[k]]``
            would score ``members[k]`` alone. Checked at the call (integer, 1-D, non-empty,
            within ``val_data``, on its device) and against the number of members at the
            first event.
        folds: For an ensemble's events whose members carry a ``fold`` hyperparameter (as
            :func:`~fitstream.search` with ``folds=`` gives them, or
            ``ensemble_stream(hparams=[{"fold": f}, ...])``): the ``(train_rows,
            held_out_rows)`` pairs of :func:`~fitstream.kfold` or :func:`~fitstream.bootstrap`.
            Member ``k`` is scored on the held-out rows of its fold, read from
            ``ensemble.hparams[k]["fold"]`` at every event, so a member whose slot takes
            another trial, or an ensemble rebuilt in another order, is still scored on its own
            fold. ``val_data`` is then the data the folds index (the training data). Not with
            ``rows``.

    Returns:
        The augmenter, ``event -> {key: float}`` (``{key: [float, ...]}`` per member). It
        reads the loss back to the host once per evaluation, however many chunks there are.
        Called with an event, it raises KeyError when the event has no ``"model"`` (listing
        the keys it has), ValueError when ``val_data`` is on another device than the model or
        an ensemble's output is not stacked by member, and TypeError when ``loss_fn`` gives
        more than one number.

    Raises:
        TypeError: ``val_data`` is not a sequence of tensors, ``loss_fn`` is not callable, or
            ``key`` is not a string.
        ValueError: ``val_data`` is empty or its tensors' first dimensions differ, it has one
            tensor with ``last_label=True``, ``batch_size`` is not positive, or ``key`` is empty
            or one of the event's own keys (``step``, ``model``, ``train_loss``, ...).
            ``rows`` that is not a list of non-empty 1-D integer tensors within ``val_data``
            and on its device (TypeError for the wrong types). Called with an event, ``rows``
            of another count than the ensemble's members is a ValueError, and ``rows`` with a
            single model's event a TypeError.

    Example:
        >>> from torch import nn
        >>> X, y = torch.randn(100, 3), torch.randn(100, 1)
        >>> model = nn.Linear(3, 1)
        >>> add_val_loss = validation_loss((X, y), nn.MSELoss(), batch_size=32)
        >>> added = add_val_loss({"step": 1, "model": model})
        >>> list(added), type(added["val_loss"])
        (['val_loss'], <class 'float'>)
        >>> with torch.no_grad():
        ...     one_pass = nn.functional.mse_loss(model(X), y).item()
        >>> abs(added["val_loss"] - one_pass) < 1e-6
        True

        In a pipeline, every event gets the key:

        >>> from fitstream import augment, pipe
        >>> events = [{"step": 1, "model": model}, {"step": 2, "model": model}]
        >>> [sorted(ev) for ev in pipe(events, augment(add_val_loss))]
        [['model', 'step', 'val_loss'], ['model', 'step', 'val_loss']]
    """
    func = "validation_loss"
    check_bool(last_label, func=func, arg="last_label")
    tensors = check_tensor_data(val_data, func=func, arg="val_data", last_label=last_label)
    check_not_a_class(loss_fn, func=func, arg="loss_fn", what="a loss function")
    check_callable(loss_fn, func=func, arg="loss_fn")
    assert callable(loss_fn)
    if last_label:
        check_arity(loss_fn, 2, func=func, arg="loss_fn", of="the predictions and the labels")
    else:
        check_arity(loss_fn, 1, func=func, arg="loss_fn", of="the predictions")
    check_name(key, func=func, what="'key'")
    check_not_own_key(key, func=func, arg="key")
    check_positive_int(batch_size, func=func, arg="batch_size", allow_none=True)
    spec = MetricSpec(key, loss_fn, stateful=False, label="'loss_fn'")
    return augmenter(
        func, tensors, [spec], last_label=last_label, batch_size=batch_size, rows=rows,
        folds=folds,
    )  # fmt: skip


def evaluate(
    val_data: Sequence[torch.Tensor],
    *,
    metrics: Mapping[str, Any],
    last_label: bool = True,
    batch_size: int | None = None,
    rows: Sequence[torch.Tensor] | None = None,
    folds: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Augmenter:
    """Make an augmenter that adds metrics of the event's model on ``val_data``.

    Each entry of ``metrics`` is one of:

    * a callable ``fn(pred, labels)`` (``fn(pred)`` when ``last_label`` is false) returning a
      number or a one-element tensor; its value is added under its name. With ``batch_size``
      the chunks' values are averaged weighted by chunk size, which is exact only for a
      per-sample mean (accuracy, mean squared error), not for e.g. a median or an F1 score;
    * a torchmetrics ``Metric`` (or any object with ``update``/``compute``/``reset``): it is
      moved to the model's device, reset, updated chunk by chunk and computed, so its value
      equals one computation over the whole set;
    * a torchmetrics ``MetricCollection``: it adds one key per metric. A collection that names
      itself (``prefix=`` or ``postfix=`` given) keeps its names; otherwise its names get the
      mapping key and ``_`` in front: ``{"val": MetricCollection({"acc": ...})}`` adds
      ``"val_acc"``.

    Evaluation runs without gradients and in eval mode (every submodule's own mode is restored
    afterwards, also on error); the values are read back to the host together, as Python
    floats. NaN values are reported as they are.

    On an ensemble's event each key holds a per-member list of K floats, from one forward of
    the ensemble per chunk (its output stacked as ``(K, n, ...)``), each metric applied to each
    member's slice: member k's values equal ``evaluate`` on ``members[k]`` alone. A plain
    callable runs once per chunk for all the members under ``torch.func.vmap`` (it then sees
    one member's slice, batched); one that cannot run so (it reads a value back, goes through
    numpy) is called member by member from then on, after that one try. A stateful
    metric is copied once per member (``copy.deepcopy``, on the first ensemble event) and the
    copies are updated and computed; the object you passed is left unused for ensembles.

    Args:
        val_data: Tensors with one row per sample, e.g. ``(X_val, y_val)``, on the model's device.
        metrics: Names mapped to metrics, as above.
        last_label: Whether the last tensor of ``val_data`` holds the labels.
        batch_size: Evaluate in chunks of this many samples instead of one forward pass.
        rows: For an ensemble's events, member ``k`` is evaluated on the rows ``rows[k]`` of
            ``val_data`` only, as for :func:`validation_loss`.
        folds: For an ensemble whose members carry a ``fold`` hyperparameter, member ``k`` is
            evaluated on the held-out rows of ``folds[fold]``, read from the event at every
            event, as for :func:`validation_loss`.

    Returns:
        The augmenter, ``event -> {name: float, ...}`` (lists of K floats per member). Called
        with an event, it raises KeyError when the event has no ``"model"`` (listing the keys
        it has), ValueError when ``val_data`` is on another device than the model, two metrics
        give one key or an ensemble's output is not stacked by member, and TypeError when a
        metric gives more than one number.

    Raises:
        TypeError: ``metrics`` is not a mapping of string names to callables, or ``val_data`` is
            not a sequence of tensors.
        ValueError: ``metrics`` is empty or has an empty name or one of the event's own keys,
            or ``val_data`` or ``batch_size`` is invalid (as for :func:`validation_loss`).

    Example:
        >>> from torch import nn
        >>> X, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
        >>> model = nn.Linear(4, 3)
        >>> def accuracy(pred, labels):
        ...     return (pred.argmax(dim=1) == labels).float().mean()
        >>> metrics = {"val_acc": accuracy, "val_ce": nn.CrossEntropyLoss()}
        >>> add_metrics = evaluate((X, y), metrics=metrics, batch_size=25)
        >>> added = add_metrics({"step": 1, "model": model})
        >>> sorted(added), all(0.0 <= v for v in added.values())
        (['val_acc', 'val_ce'], True)
    """
    func = "evaluate"
    check_bool(last_label, func=func, arg="last_label")
    tensors = check_tensor_data(val_data, func=func, arg="val_data", last_label=last_label)
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"{func}: 'metrics' must be a mapping of names to metrics such as "
            f"{{'val_acc': accuracy}}, got {describe(metrics)}"
        )
    if not metrics:
        raise ValueError(f"{func}: 'metrics' must hold at least one metric, got an empty mapping")
    specs = []
    for name, metric in metrics.items():
        check_name(name, func=func, what="each name in 'metrics'")
        check_not_own_key(name, func=func, arg="metrics")
        check_metric(metric, func=func, arg=f"metrics[{name!r}]", last_label=last_label)
        specs.append(MetricSpec(name, metric, is_stateful_metric(metric), f"metric {name!r}"))
    check_positive_int(batch_size, func=func, arg="batch_size", allow_none=True)
    return augmenter(
        func, tensors, specs, last_label=last_label, batch_size=batch_size, rows=rows,
        folds=folds,
    )  # fmt: skip


mark_factory(validation_loss, "augment(validation_loss((X_val, y_val), loss_fn))")
mark_factory(evaluate, "augment(evaluate((X_val, y_val), metrics={'val_acc': accuracy}))")
