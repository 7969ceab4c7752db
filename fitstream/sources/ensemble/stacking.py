"""The ensemble as one module: K members' tensors stacked, the members' own tensors views into them.

Every parameter and buffer of the K members lives in a *slab*, a ``(K, n)`` tensor per kind
(one per optimizer param group and dtype, one for untrained parameters, one for buffers). The
stacked tensor of a name is a ``(K, *shape)`` view into its slab, and member ``k``'s own
parameter is a view into row ``k``: an update of the stacked tensors is at once an update of the
user's modules, and ``models[k].load_state_dict(...)`` writes into the slab.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..._internal.checks import describe
from .member_checks import check_models
from .mlp import mlp_forward, mlp_plan

__all__ = ["Ensemble"]


class _Slab:
    """One ``(K, n)`` tensor holding, per member, the flattened tensors of ``names``."""

    def __init__(
        self,
        names: list[str],
        sources: list[list[torch.Tensor]],
        trainable: bool,
        group: int | None,
    ) -> None:
        first = sources[0]
        self.names, self.trainable, self.group = names, trainable, group
        self.shapes = [tuple(t.shape) for t in first]
        numels = [t.numel() for t in first]
        self.offsets = [sum(numels[:i]) for i in range(len(numels))]
        self.numels = numels
        k = len(sources)
        self.data = torch.empty(k, sum(numels), dtype=first[0].dtype, device=first[0].device)
        with torch.no_grad():
            for row, tensors in enumerate(sources):
                for tensor, off, n in zip(tensors, self.offsets, numels, strict=True):
                    self.data[row, off : off + n].copy_(tensor.reshape(-1))
        self.grad = torch.zeros_like(self.data) if trainable else None
        self.stacked = [self._view(self.data, i) for i in range(len(names))]
        if trainable:
            self.stacked = [nn.Parameter(t) for t in self.stacked]
        self.grads = (
            [] if self.grad is None else [self._view(self.grad, i) for i in range(len(names))]
        )

    def _view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        off, n = self.offsets[i], self.numels[i]
        return flat[:, off : off + n].view(flat.shape[0], *self.shapes[i])

    def member_view(self, row: int, i: int) -> torch.Tensor:
        return self.row_view(self.data, row, i)

    def attach(self, member: nn.Module, row: int) -> None:
        """Make ``member``'s tensors of this slab views into row ``row`` of the stacked data."""
        for i, name in enumerate(self.names):
            view = self.member_view(row, i)
            if self.group == -1:
                owner, _, attr = name.rpartition(".")
                member.get_submodule(owner)._buffers[attr] = view
            else:
                member.get_parameter(name).data = view

    def row_view(self, flat: torch.Tensor, row: int, i: int) -> torch.Tensor:
        """Member ``row``'s tensor ``i`` in ``flat``, a ``(K, n)`` tensor laid out as the slab."""
        off, n = self.offsets[i], self.numels[i]
        return flat[row, off : off + n].view(self.shapes[i])


class Ensemble(nn.Module):
    """K modules of one architecture run as one: ``forward`` returns their outputs stacked.

    The members' parameters and buffers are stacked on a new leading dimension (one row per
    member) and the members' own tensors become views into those rows: the user's modules always
    hold the members' current weights, and changing one of them (``load_state_dict``, an in-place
    edit) changes the ensemble. ``forward(*inputs)`` runs every member on the same inputs in one
    vectorised call (``torch.func.vmap`` over ``functional_call``, or batched matrix products for
    an ``nn.Sequential`` of ``nn.Linear`` and elementwise activations) and returns a tensor of
    shape ``(K, *output_shape)``. Dropout draws an independent mask for each member.

    :func:`~fitstream.ensemble_stream` builds one and puts it under each event's ``model`` key;
    stages and sinks read ``members``, ``hparams`` and ``active`` and may call ``freeze(k)``.

    Do not move the ensemble or its members to another device or dtype afterwards (``.to()``
    replaces the members' tensors and cuts the link); build the members where they will train.
    Saving a member's ``state_dict()`` with ``torch.save`` writes the whole slab its tensors
    view (all K members): clone the tensors first to save one member alone.

    Args:
        models: The members, modules of one architecture on one device that share no tensors.

    Raises:
        TypeError: ``models`` is not a sequence of modules.
        ValueError: No models, a model without parameters, members that differ in their modules
            or in a parameter's or buffer's name, shape or dtype (the first difference is named),
            members on different devices or sharing tensors, or a module with running statistics
            (BatchNorm with ``track_running_stats=True``).

    Example:
        >>> members = [nn.Linear(3, 2) for _ in range(4)]
        >>> ensemble = Ensemble(members)
        >>> ensemble(torch.randn(5, 3)).shape
        torch.Size([4, 5, 2])
        >>> len(ensemble), ensemble.active
        (4, (True, True, True, True))
        >>> with torch.no_grad():  # a member's tensors are views into the stack
        ...     _ = members[1].weight.fill_(0.0)
        >>> ensemble(torch.randn(5, 3))[1].abs().max() == members[1].bias.abs().max()
        tensor(True)
    """

    def __init__(
        self, models: Sequence[nn.Module], *, _groups: Sequence[Sequence[str]] | None = None
    ) -> None:
        super().__init__()
        members = check_models(models, func="Ensemble")
        self._members = tuple(members)
        self._active = [True] * len(members)
        self._hparams: Callable[[], list[dict[str, Any]]] = lambda: [{} for _ in members]
        # set by ensemble_stream: puts a new model and optimizer into a slot
        self._replacer: Callable[..., None] | None = None
        self._slabs = _build_slabs(members, _groups)
        self.stacked = nn.ParameterList(
            [t for slab in self._slabs if slab.trainable for t in slab.stacked]
        )
        self._params: dict[str, torch.Tensor] = {}
        self._buffers_stacked: dict[str, torch.Tensor] = {}
        for slab in self._slabs:
            target = self._params if slab.group != -1 else self._buffers_stacked
            target.update(zip(slab.names, slab.stacked, strict=True))
        self._frozen_rows: torch.Tensor | None = None
        self._frozen_saved: list[torch.Tensor] = []
        self._mlp = mlp_plan(members[0])
        self.train(members[0].training)

    # -- the interface stages and sinks rely on (fitstream._internal.members.EnsembleLike) ----

    @property
    def members(self) -> tuple[nn.Module, ...]:
        """The user's modules, in order; each holds its member's current weights."""
        return self._members

    @property
    def hparams(self) -> list[dict[str, Any]]:
        """Per member, its optimizer's class and first param group's scalars, read now."""
        return self._hparams()

    @property
    def active(self) -> tuple[bool, ...]:
        """Per member, whether it still trains (``False`` once frozen)."""
        return tuple(self._active)

    def freeze(self, member: int) -> None:
        """Stop every further update of member ``member``'s weights (and optimizer state).

        Takes effect from the next epoch; the member keeps the weights it has now. Freezing a
        frozen member does nothing.

        Raises:
            TypeError: ``member`` is not an int.
            IndexError: ``member`` is not in ``range(len(self))``.
        """
        self._check_member(member, func="Ensemble.freeze")
        if not self._active[member]:
            return
        self._active[member] = False
        rows = [k for k, on in enumerate(self._active) if not on]
        index = torch.tensor(rows, device=self._slabs[0].data.device)
        self._frozen_rows = index
        self._frozen_saved = [s.data[index].clone() for s in self._slabs if s.trainable]

    def replace(
        self,
        member: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        hparams: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Put a new model and its optimizer into slot ``member`` of the running ensemble.

        From the next epoch on, slot ``member`` trains ``model`` with ``optimizer`` exactly as
        :func:`~fitstream.epoch_stream` would train it alone from its current weights: the
        weights are copied into the member's rows (``model``'s tensors become views into them,
        as the first members' did), its optimizer state starts afresh (no momentum, Adam's
        step count at 0) and a frozen slot trains again. The other members are untouched.
        ``hparams`` replace the slot's own hyperparameters (those given to
        ``ensemble_stream(hparams=...)``). ``generator`` gives the newcomer its own shuffle
        order, on a stream with one generator per member (``ensemble_stream(generator=[...])``);
        without it the slot keeps its generator. The slot keeps its ``rows``. The optimizer
        must be of the kind the ensemble
        steps (SGD for an SGD ensemble, Adam or AdamW for an Adam one), over ``model``'s
        parameters grouped as the other members' are. Only the ensemble of an
        :func:`~fitstream.ensemble_stream` can take a new member, between epochs (while the
        consumer holds an event); not yet with ``cuda_graphs=True``.

        Raises:
            TypeError: ``member`` is not an int, the ensemble does not belong to a stream, or
                the optimizer is of another kind.
            IndexError: ``member`` is not in ``range(len(self))``.
            ValueError: ``model`` differs in architecture, device or dtype, is already a
                member, the optimizer is not over ``model``'s parameters, ``hparams``
                are not plain values, or ``generator`` is given to a stream that shuffles
                every member with one generator (or is another member's, or on another
                device).
        """
        self._check_member(member, func="Ensemble.replace")
        if self._replacer is None:
            raise TypeError(
                "Ensemble.replace: only the ensemble of a running ensemble_stream can take a new "
                "member (an Ensemble built by hand has no optimizer step to restart)"
            )
        self._replacer(member, model, optimizer, hparams, generator)

    def _check_member(self, member: object, *, func: str) -> None:
        if isinstance(member, bool) or not isinstance(member, int):
            raise TypeError(f"{func}: 'member' must be an int, got {describe(member)}")
        if not 0 <= member < len(self._members):
            raise IndexError(
                f"{func}: 'member' must be in range({len(self._members)}), got {member}"
            )

    def _unfreeze(self, member: int) -> None:
        """Let a frozen member train again (its slot has a new model)."""
        if self._active[member]:
            return
        self._active[member] = True
        rows = [k for k, on in enumerate(self._active) if not on]
        if not rows:
            self._frozen_rows, self._frozen_saved = None, []
            return
        index = torch.tensor(rows, device=self._slabs[0].data.device)
        self._frozen_rows = index
        self._frozen_saved = [s.data[index].clone() for s in self._slabs if s.trainable]

    def __len__(self) -> int:
        return len(self._members)

    # -- the module ----------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Ensemble:
        """Set the ensemble and every member to training (or evaluation) mode."""
        super().train(mode)
        for member in self._members:
            member.train(mode)
        return self

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run every member on ``inputs``; return the outputs stacked, shape ``(K, ...)``."""
        if self._mlp is not None and len(inputs) == 1 and inputs[0].dim() == 2:
            return self._mlp_forward(inputs[0])
        return self._vmapped(inputs)

    def _forward_each(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run member ``k`` on ``inputs[i][k]`` for every ``k`` (inputs stacked per member)."""
        if self._mlp is not None and len(inputs) == 1 and inputs[0].dim() == 3:
            return self._mlp_forward(inputs[0])
        return self._vmapped(inputs, each=True)

    def _vmapped(self, inputs: Sequence[torch.Tensor], each: bool = False) -> torch.Tensor:
        template = self._members[0]

        def one(params: dict[str, Any], buffers: dict[str, Any], args: Any) -> torch.Tensor:
            return functional_call(template, (params, buffers), tuple(args))  # type: ignore[no-any-return]

        run = vmap(one, in_dims=(0, 0, 0 if each else None), randomness="different")
        return run(self._params, self._buffers_stacked, list(inputs))

    def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self._mlp is not None
        return mlp_forward(self._mlp, self._params, x)

    # -- what the training loop needs ----------------------------------------------------------

    def _trainable_slabs(self) -> list[_Slab]:
        return [slab for slab in self._slabs if slab.trainable]

    def _restore_frozen(self) -> None:
        """Put the frozen members' weights back (after an optimizer step moved every row)."""
        rows = self._frozen_rows
        if rows is None:
            return
        with torch.no_grad():
            for slab, saved in zip(self._trainable_slabs(), self._frozen_saved, strict=True):
                slab.data.index_copy_(0, rows, saved)


def _build_slabs(members: list[nn.Module], groups: Sequence[Sequence[str]] | None) -> list[_Slab]:
    """Stack the members' tensors into slabs and make the members' tensors views into them.

    ``groups`` lists, per optimizer param group, the names it trains (default: one group of
    every parameter that requires grad). Parameters that need no grad or are in no group go to
    untrained slabs (group ``None``); buffers to slabs of group ``-1``. One slab per dtype.
    """
    first = members[0]
    requires = {name for name, p in first.named_parameters() if p.requires_grad}
    if groups is None:
        groups = [[name for name, _ in first.named_parameters() if name in requires]]
    kinds: list[tuple[list[str], bool, int | None]] = []
    trained: set[str] = set()
    for g, names in enumerate(groups):
        kept = [n for n in names if n in requires]
        trained.update(kept)
        kinds.append((kept, True, g))
    kinds.append(([n for n, _ in first.named_parameters() if n not in trained], False, None))
    kinds.append(([n for n, _ in first.named_buffers()], False, -1))
    slabs: list[_Slab] = []
    for names, trainable, group in kinds:
        getter = _buffer_of if group == -1 else _parameter_of
        by_dtype: dict[torch.dtype, list[str]] = {}
        for name in names:
            by_dtype.setdefault(getter(first, name).dtype, []).append(name)
        for dtype_names in by_dtype.values():
            sources = [[getter(m, n).detach() for n in dtype_names] for m in members]
            slabs.append(_Slab(dtype_names, sources, trainable, group))
    for slab in slabs:
        for row, member in enumerate(members):
            slab.attach(member, row)
    return slabs


def _parameter_of(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)


def _buffer_of(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_buffer(name)
