"""Augmenters that evaluate the event's model on held-out data.

:func:`validation_loss` and :func:`evaluate` return *augmenters*: functions from an event to a
dict of new keys, used as ``augment(validation_loss(...))``. Each evaluation runs without
gradients, with the model (every submodule) in eval mode, and restores each submodule's own
train/eval flag afterwards, also when the evaluation raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._internal.checks import (
    check_callable,
    check_name,
    check_positive_int,
    check_same_device,
    check_tensor_data,
    describe,
    model_device,
)
from ._internal.lookup import missing_key_error
from ._internal.metrics import MetricSpec, Value, add_weighted, is_stateful_metric, scalar
from ._internal.values import as_floats

__all__ = ["Augmenter", "evaluate", "evaluation_mode", "validation_loss"]

Augmenter = Callable[[Mapping[str, Any]], dict[str, float]]
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


def _note(exc: BaseException, text: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if callable(add_note):
        add_note(text)


def _augmenter(
    func: str,
    tensors: Sequence[torch.Tensor],
    specs: Sequence[MetricSpec],
    *,
    last_label: bool,
    batch_size: int | None,
) -> Augmenter:
    n_total = tensors[0].shape[0]
    step = n_total if batch_size is None else min(batch_size, n_total)
    chunked = step < n_total
    # The chunks are views made once, so an evaluation slices nothing.
    chunks = [
        (tuple(t[start : start + step] for t in tensors), min(step, n_total - start))
        for start in range(0, n_total, step)
    ]

    def run(model: nn.Module) -> dict[str, Value]:
        sums: dict[str, Value | None] = {spec.name: None for spec in specs}
        for chunk, size in chunks:
            pred = model(*chunk[:-1]) if last_label else model(*chunk)
            args = (pred, chunk[-1]) if last_label else (pred,)
            for spec in specs:
                try:
                    if spec.stateful:
                        spec.fn.update(*args)
                        continue
                    value = scalar(spec.fn(*args), func=func, label=spec.label)
                except Exception as exc:
                    _note(exc, f"(raised by {func}'s {spec.label})")
                    raise
                sums[spec.name] = add_weighted(sums[spec.name], value, size) if chunked else value
        values: dict[str, Value] = {}
        for spec in specs:
            if spec.stateful:
                results = spec.results(spec.fn.compute(), func=func)
            else:
                total = sums[spec.name]
                assert total is not None  # at least one chunk ran
                results = [(spec.name, total / n_total if chunked else total)]
            for name, value in results:
                if name in values:
                    raise ValueError(
                        f"{func}: {spec.label} gives the key {name!r}, which another metric "
                        f"already gives; rename one of them"
                    )
                values[name] = value
        return values

    def augmenter(event: Mapping[str, Any]) -> dict[str, float]:
        model = _model_of(event, func)
        check_same_device(tensors, model, func=func, arg="val_data")
        device = model_device(model) or tensors[0].device
        with torch.no_grad(), evaluation_mode(model):
            for spec in specs:
                spec.prepare(device)
            values = run(model)
        return as_floats(values)

    return augmenter


def validation_loss(
    val_data: Sequence[torch.Tensor],
    loss_fn: Callable[..., Any],
    *,
    key: str = "val_loss",
    last_label: bool = True,
    batch_size: int | None = None,
) -> Augmenter:
    """Make an augmenter that adds the loss of the event's model on ``val_data``.

    The returned function takes an event, evaluates ``event["model"]`` without gradients and in
    eval mode (every submodule's own mode is restored afterwards, also on error) and returns
    ``{key: loss}`` with the loss as a Python float. Use it as ``augment(validation_loss(...))``.
    A NaN or infinite loss is reported as it is.

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

    Returns:
        The augmenter, ``event -> {key: float}``. It reads the loss back to the host once per
        evaluation, however many chunks there are. Called with an event, it raises KeyError
        when the event has no ``"model"`` (listing the keys it has), ValueError when
        ``val_data`` is on another device than the model, and TypeError when ``loss_fn`` gives
        more than one number.

    Raises:
        TypeError: ``val_data`` is not a sequence of tensors, ``loss_fn`` is not callable, or
            ``key`` is not a string.
        ValueError: ``val_data`` is empty or its tensors' first dimensions differ, it has one
            tensor with ``last_label=True``, ``batch_size`` is not positive, or ``key`` is empty.

    Example:
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
    tensors = check_tensor_data(val_data, func=func, arg="val_data", last_label=last_label)
    check_callable(loss_fn, func=func, arg="loss_fn")
    check_name(key, func=func, what="'key'")
    check_positive_int(batch_size, func=func, arg="batch_size", allow_none=True)
    spec = MetricSpec(key, loss_fn, stateful=False, label="'loss_fn'")
    return _augmenter(func, tensors, [spec], last_label=last_label, batch_size=batch_size)


def evaluate(
    val_data: Sequence[torch.Tensor],
    *,
    metrics: Mapping[str, Any],
    last_label: bool = True,
    batch_size: int | None = None,
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

    Args:
        val_data: Tensors with one row per sample, e.g. ``(X_val, y_val)``, on the model's device.
        metrics: Names mapped to metrics, as above.
        last_label: Whether the last tensor of ``val_data`` holds the labels.
        batch_size: Evaluate in chunks of this many samples instead of one forward pass.

    Returns:
        The augmenter, ``event -> {name: float, ...}``. Called with an event, it raises
        KeyError when the event has no ``"model"`` (listing the keys it has), ValueError when
        ``val_data`` is on another device than the model or two metrics give one key, and
        TypeError when a metric gives more than one number.

    Raises:
        TypeError: ``metrics`` is not a mapping of string names to callables, or ``val_data`` is
            not a sequence of tensors.
        ValueError: ``metrics`` is empty or has an empty name, or ``val_data`` or
            ``batch_size`` is invalid (as for :func:`validation_loss`).

    Example:
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
        check_callable(metric, func=func, arg=f"metrics[{name!r}]")
        specs.append(MetricSpec(name, metric, is_stateful_metric(metric), f"metric {name!r}"))
    check_positive_int(batch_size, func=func, arg="batch_size", allow_none=True)
    return _augmenter(func, tensors, specs, last_label=last_label, batch_size=batch_size)
