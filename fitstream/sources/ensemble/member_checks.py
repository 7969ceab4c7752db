"""Checks on the members of an ensemble: one architecture, one device, nothing shared."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..._internal.checks import check_generator, describe
from ..._internal.train_checks import check_no_closure, check_rates

__all__ = ["check_generators", "check_hooks", "check_models", "check_optimizers"]


def check_models(models: object, *, func: str) -> list[nn.Module]:
    """Refuse ``models`` unless it is a non-empty sequence of modules that can train as one.

    The members must have the same module tree and the same parameter and buffer names, shapes
    and dtypes, live on one device, share no tensor and hold no module that updates running
    statistics in training (BatchNorm and the like).
    """
    if not isinstance(models, Sequence) or isinstance(models, str | bytes | nn.Module):
        raise TypeError(
            f"{func}: 'models' must be a list or tuple of torch.nn.Module, got {describe(models)}"
        )
    members = list(models)
    if not members:
        raise ValueError(f"{func}: 'models' must hold at least one model, got an empty sequence")
    for k, model in enumerate(members):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{func}: 'models[{k}]' must be a torch.nn.Module, got {describe(model)}"
            )
    first = members[0]
    if next(first.parameters(), None) is None:
        raise ValueError(f"{func}: 'models[0]' has no parameters to train")
    _check_no_running_stats(first, func=func)
    for k, model in enumerate(members[1:], start=1):
        _check_same_architecture(first, model, k, func=func)
    _check_one_device(members, func=func)
    _check_nothing_shared(members, func=func)
    return members


def _check_no_running_stats(model: nn.Module, *, func: str) -> None:
    for name, module in model.named_modules():
        if isinstance(module, _NormBase) and module.track_running_stats:
            raise ValueError(
                f"{func}: 'models[0]' holds {type(module).__name__} at {name!r}, which updates "
                f"running statistics in training; members cannot keep those apart yet. Build "
                f"it with track_running_stats=False, or use LayerNorm/GroupNorm"
            )


def _signature(
    tensors: Sequence[tuple[str, torch.Tensor]],
) -> list[tuple[str, tuple[int, ...], str]]:
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in tensors]


def _check_same_architecture(first: nn.Module, model: nn.Module, k: int, *, func: str) -> None:
    where = f"{func}: 'models[{k}]' differs from 'models[0]'"
    ref_modules = [(name, type(m)) for name, m in first.named_modules()]
    modules = [(name, type(m)) for name, m in model.named_modules()]
    for (ref_name, ref_type), (name, kind) in zip(ref_modules, modules, strict=False):
        if ref_name != name or ref_type is not kind:
            raise ValueError(
                f"{where} in its modules: {ref_name!r} ({ref_type.__name__}) in models[0], "
                f"{name!r} ({kind.__name__}) in models[{k}]; members must share one architecture"
            )
    if len(ref_modules) != len(modules):
        longer, owner = (modules, f"models[{k}]") if len(modules) > len(ref_modules) else (
            ref_modules, "models[0]"
        )  # fmt: skip
        extra_name, extra_type = longer[min(len(modules), len(ref_modules))]
        raise ValueError(
            f"{where}: it has {len(modules)} modules, models[0] has {len(ref_modules)}; the "
            f"first one only {owner} has is {extra_name!r} ({extra_type.__name__}); members "
            f"must share one architecture"
        )
    for what, ref, got in (
        ("parameter", list(first.named_parameters()), list(model.named_parameters())),
        ("buffer", list(first.named_buffers()), list(model.named_buffers())),
    ):
        for (rn, rs, rd), (n, s, d) in zip(_signature(ref), _signature(got), strict=False):
            if (rn, rs, rd) != (n, s, d):
                detail = (
                    f"name {rn!r} vs {n!r}"
                    if rn != n
                    else (f"shape {rs} vs {s}" if rs != s else f"dtype {rd} vs {d}")
                )
                raise ValueError(
                    f"{where} in {what} {rn!r}: {detail}; members must share one architecture"
                )
        if len(ref) != len(got):
            more, owner = (got, f"models[{k}]") if len(got) > len(ref) else (ref, "models[0]")
            raise ValueError(
                f"{where}: it has {len(got)} {what}s, models[0] has {len(ref)}; the first one "
                f"only {owner} has is {more[min(len(got), len(ref))][0]!r}; members must "
                f"share one architecture"
            )


def _check_one_device(members: list[nn.Module], *, func: str) -> None:
    device: torch.device | None = None
    for k, model in enumerate(members):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if device is None:
                device = tensor.device
            elif tensor.device != device:
                raise ValueError(
                    f"{func}: 'models[{k}]' has {name!r} on device {tensor.device} but "
                    f"'models[0]' is on {device}; move every model to one device first"
                )


def _check_nothing_shared(members: list[nn.Module], *, func: str) -> None:
    owner: dict[int, tuple[int, str]] = {}
    for k, model in enumerate(members):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            for key in (id(tensor), tensor.data_ptr() or id(tensor)):  # meta: no memory
                seen = owner.get(key)
                if seen is not None and seen[0] != k and tensor.numel() > 0:
                    raise ValueError(
                        f"{func}: 'models[{k}]' shares {name!r} with 'models[{seen[0]}]' "
                        f"({seen[1]!r}); each member needs its own tensors, e.g. "
                        f"copy.deepcopy(model) for each"
                    )
                owner.setdefault(key, (k, name))


def check_optimizers(
    optimizers: object, members: list[nn.Module], *, func: str
) -> list[torch.optim.Optimizer]:
    """Refuse optimizers unless ``optimizers[k]`` is over ``members[k]``'s own parameters.

    The param groups must hold the same parameter names, in the same order, for every member.
    """
    if not isinstance(optimizers, Sequence) or isinstance(optimizers, str | bytes):
        raise TypeError(
            f"{func}: 'optimizers' must be a list or tuple of torch optimizers, one per model, "
            f"got {describe(optimizers)}"
        )
    opts = list(optimizers)
    if len(opts) != len(members):
        raise ValueError(
            f"{func}: 'optimizers' must hold one optimizer per model: got {len(opts)} "
            f"optimizers for {len(members)} models"
        )
    owners: dict[int, tuple[int, str]] = {}
    for k, model in enumerate(members):
        for name, param in model.named_parameters():
            owners[id(param)] = (k, name)
    reference: list[list[str]] | None = None
    seen: dict[int, int] = {}
    for k, opt in enumerate(opts):
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"{func}: 'optimizers[{k}]' must be a torch.optim.Optimizer, got {describe(opt)}"
            )
        if id(opt) in seen:
            raise ValueError(
                f"{func}: 'optimizers[{k}]' is the same object as 'optimizers[{seen[id(opt)]}]'; "
                f"give each member its own optimizer over its own parameters, e.g. "
                f"[{type(opt).__name__}(m.parameters(), ...) for m in models]"
            )
        seen[id(opt)] = k
        check_no_closure(opt, func=func, arg=f"optimizers[{k}]")
        check_rates(opt, func=func, arg=f"optimizers[{k}]")
        over = sorted(
            {owners[id(p)][0] for g in opt.param_groups for p in g["params"] if id(p) in owners}
        )
        if len(over) > 1:
            raise ValueError(
                f"{func}: 'optimizers[{k}]' is over the parameters of several models "
                f"({', '.join(f'models[{j}]' for j in over[:4])}{'...' if len(over) > 4 else ''})"
                f"; give each member its own optimizer over its own parameters, e.g. "
                f"[{type(opt).__name__}(m.parameters(), ...) for m in models]"
            )
        groups: list[list[str]] = []
        for g, group in enumerate(opt.param_groups):
            names = []
            for param in group["params"]:
                owner = owners.get(id(param))
                if owner is None:
                    raise ValueError(
                        f"{func}: 'optimizers[{k}]' holds a parameter that belongs to none of "
                        f"'models' (param_groups[{g}]); build it over models[{k}].parameters()"
                    )
                if owner[0] != k:
                    raise ValueError(
                        f"{func}: 'optimizers[{k}]' is over the parameters of 'models[{owner[0]}]'"
                        f", not 'models[{k}]'; pass the optimizers in the order of the models"
                    )
                names.append(owner[1])
            groups.append(names)
        if reference is None:
            reference = groups
        elif groups != reference:
            raise ValueError(
                f"{func}: the param_groups of 'optimizers[{k}]' hold the parameters {groups!r:.80}"
                f" but those of 'optimizers[0]' hold {reference!r:.80}; every member's optimizer "
                f"must group the same parameters in the same order"
            )
    return opts


def check_generators(
    generator: object, device: torch.device, k: int, *, func: str
) -> torch.Generator | list[torch.Generator] | None:
    """Check ``generator``: one generator (or None), or a list of ``k`` distinct generators."""
    if not isinstance(generator, list | tuple):
        check_generator(generator, device, func=func)
        return generator  # type: ignore[return-value]
    if len(generator) != k:
        raise ValueError(
            f"{func}: 'generator' as a list must hold one torch.Generator per model: got "
            f"{len(generator)} for {k} models"
        )
    seen: dict[int, int] = {}
    for position, each in enumerate(generator):
        if not isinstance(each, torch.Generator):
            raise TypeError(
                f"{func}: 'generator[{position}]' must be a torch.Generator, got {describe(each)}"
            )
        check_generator(each, device, func=func)
        if id(each) in seen:
            raise ValueError(
                f"{func}: 'generator[{position}]' is the same object as "
                f"'generator[{seen[id(each)]}]'; give each member its own generator"
            )
        seen[id(each)] = position
    return list(generator)


_MODULE_HOOKS = {
    "_forward_pre_hooks": "register_forward_pre_hook",
    "_forward_hooks": "register_forward_hook",
    "_backward_pre_hooks": "register_full_backward_pre_hook",
    "_backward_hooks": "register_full_backward_hook",
}
_STEP_HOOKS = {
    "_optimizer_step_pre_hooks": "register_step_pre_hook",
    "_optimizer_step_post_hooks": "register_step_post_hook",
}


def check_hooks(
    members: list[nn.Module],
    optimizers: list[torch.optim.Optimizer],
    *,
    vectorised: bool,
    func: str,
) -> None:
    """Refuse hooks the ensemble would not run as the user expects, naming the hook.

    The members' forward and backward run as one vectorised call (batched matrix products, or
    ``vmap`` over member 0's ``forward``), so a module hook on a member would run never, or once
    for all members; the vectorised SGD/Adam/AdamW step never calls ``optimizers[k].step()``,
    so its step hooks would never run. Refusing them is better than a sweep silently trained
    without its gradient clipping.
    """
    for k, model in enumerate(members):
        for name, module in model.named_modules():
            for attr, register in _MODULE_HOOKS.items():
                if getattr(module, attr, None):
                    where = f"models[{k}]" + (f".{name}" if name else "")
                    raise ValueError(
                        f"{func}: {where} has a hook from {register}(); ensemble members run "
                        f"as one vectorised call, so it would not run per member; remove it, "
                        f"or train that model with epoch_stream"
                    )
    if not vectorised:
        return  # each member's optimizer.step() is called: its hooks run
    from torch.optim import optimizer as torch_optimizer

    globals_ = (
        torch_optimizer._global_optimizer_pre_hooks,
        torch_optimizer._global_optimizer_post_hooks,
    )
    if any(globals_):
        raise ValueError(
            f"{func}: a global optimizer step hook is registered "
            f"(torch.optim.optimizer.register_optimizer_step_pre_hook/post_hook); the "
            f"vectorised SGD/Adam/AdamW step of an ensemble does not call optimizer.step(), so "
            f"it would never run; remove it, or use another optimizer class, stepped per member"
        )
    for k, opt in enumerate(optimizers):
        for attr, register in _STEP_HOOKS.items():
            if getattr(opt, attr, None):
                raise ValueError(
                    f"{func}: 'optimizers[{k}]' has a hook from {register}(); the vectorised "
                    f"{type(opt).__name__} step of an ensemble does not call "
                    f"optimizer.step(), so it would never run (a sweep 'with clipping' would "
                    f"train without it); remove it, or use another optimizer class, stepped "
                    f"per member"
                )
