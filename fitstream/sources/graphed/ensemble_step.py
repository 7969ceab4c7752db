"""``ensemble_stream(cuda_graphs=True)``: the ensemble's whole vectorised step as a graph.

:class:`EnsembleStep` is the :class:`~fitstream.sources.graphed.steps.StepProgram` of an ensemble
trained by :class:`~fitstream.sources.ensemble.sgd.VectorSGD` or ``VectorAdam``:
:class:`~fitstream.sources.graphed.steps.GraphedSteps` captures and replays it as it does
``epoch_stream``'s step. What a replayed graph must see change, it reads from tensors that
change in place:

- hyperparameters: the ``(K, 1)`` tensors that ``refresh`` fills from the members'
  ``param_groups`` at the start of each epoch (Adam's bias corrections too, read at a step
  position kept on the device), so a new learning rate needs no capture;
- weights: the slabs the members' own tensors view, so ``models[k].load_state_dict`` reaches
  the graph.

What a graph cannot see is in :meth:`EnsembleStep.key`, and a change captures again: which
branches the vectorised optimizer takes (a hyperparameter becoming zero or non-zero), state it
created, the members frozen, train/eval modes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from ..ensemble.adam import VectorAdam
from ..ensemble.loop import EnsembleLoop
from ..ensemble.sgd import VectorSGD
from .snapshot import RandomState
from .step_state import tensor_key

__all__ = ["EnsembleSnapshot", "EnsembleStep"]


class EnsembleStep:
    """One vectorised step of every member, in the form :class:`GraphedSteps` captures.

    With ``tensors`` (per-member data orders) a batch is one ``(B, K)`` block of row indices,
    column ``k`` member ``k``'s rows, gathered from ``tensors`` inside the step; otherwise a
    batch is the rows of the data shared by all members.
    """

    def __init__(
        self,
        loop: EnsembleLoop,
        stepper: VectorSGD | VectorAdam,
        device: torch.device,
        tensors: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        self.loop = loop
        self.stepper = stepper
        self.device = device
        self.tensors = tensors

    def step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One training step of every member on ``batch`` (row indices, with per-member rows)."""
        loop = self.loop
        last_label = loop.last_label
        each = self.tensors is not None
        if self.tensors is not None:
            index = batch[0].T  # (K, B): member k's rows in row k
            data = tuple(t[index] for t in self.tensors)
        else:
            data = batch
        inputs, labels = list(data[:-1] if last_label else data), data[-1]
        frozen = not all(loop.ensemble._active)
        return loop.step(inputs, labels if last_label else None, each=each, frozen=frozen)

    def release_grads(self) -> None:
        """Nothing to release: the step copies fresh gradients into the gradient slabs."""

    def key(self) -> Hashable:
        """What a capture depends on: when it changes, the step is captured again."""
        ensemble, stepper = self.loop.ensemble, self.stepper
        fixed = [
            *(slab.data for slab in ensemble._slabs),
            *(slab.grad for slab in ensemble._slabs if slab.grad is not None),
            *ensemble.stacked,
            *stepper.fixed_tensors(),
        ]
        state = tuple(
            tuple(None if t is None else tensor_key(t) for t in entries)
            for entries in stepper.state_lists()
        )
        flags = tuple(tuple(sorted(f.items())) for f in stepper.flags)
        modes = tuple(m.training for member in ensemble.members for m in member.modules())
        frozen = (
            tuple(ensemble._active),
            id(ensemble._frozen_rows),
            tuple(id(t) for t in ensemble._frozen_saved),
        )
        return (tuple(tensor_key(t) for t in fixed), state, flags, modes, ensemble.training, frozen)

    def snapshot(self) -> EnsembleSnapshot:
        """Save what a capture's warm-up changes, to undo it."""
        return EnsembleSnapshot(self.loop, self.stepper, self.device)

    def needs_first_step(self) -> bool:
        """Whether the next step creates optimizer state (then it runs eagerly first)."""
        return self.stepper.needs_first_step()

    def prepare(self) -> None:
        """Nothing to prepare: the vectorised optimizers keep all their state on the device."""

    def grads(self) -> list[torch.Tensor | None]:
        """None to repoint: the gradient slabs stay the same tensors."""
        return []

    def set_grads(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Nothing to set: :meth:`grads` gives none."""
        assert not grads


class EnsembleSnapshot:
    """The ensemble's weights and gradients, the vectorised optimizer's state, the generators.

    :meth:`restore` writes the values back into the same tensors and forgets state created
    since (an SGD momentum buffer made by a first step is ``None`` again).

    Example:
        >>> from torch import nn
        >>> from fitstream.sources.ensemble.stacking import Ensemble
        >>> models = [nn.Linear(2, 1) for _ in range(3)]
        >>> opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
        >>> ensemble = Ensemble(models)
        >>> stepper = VectorSGD(ensemble, opts)
        >>> loop = EnsembleLoop(ensemble, nn.MSELoss(), stepper, last_label=True)
        >>> stepper.refresh(1)
        >>> before = models[1].weight.detach().clone()
        >>> snap = EnsembleSnapshot(loop, stepper, torch.device("cpu"))
        >>> _ = loop.step([torch.ones(4, 2)], torch.zeros(4, 1), each=False, frozen=False)
        >>> snap.restore()
        >>> torch.equal(models[1].weight, before), stepper.buffers
        (True, [None])
    """

    def __init__(
        self, loop: EnsembleLoop, stepper: VectorSGD | VectorAdam, device: torch.device
    ) -> None:
        self._stepper = stepper
        tensors = [s.data for s in loop.ensemble._slabs]
        tensors += [s.grad for s in loop.ensemble._slabs if s.grad is not None]
        self._lists = [(entries, list(entries)) for entries in stepper.state_lists()]
        tensors += [t for _, saved in self._lists for t in saved if t is not None]
        if isinstance(stepper, VectorAdam) and stepper.cursor_t is not None:
            tensors.append(stepper.cursor_t)
        with torch.no_grad():
            self._values = [(t, t.detach().clone()) for t in tensors]
        self._cursor = stepper.cursor if isinstance(stepper, VectorAdam) else 0
        self._random = RandomState(device)

    def restore(self) -> None:
        """Put every recorded value back (see the class docstring)."""
        with torch.no_grad():
            for tensor, value in self._values:
                tensor.copy_(value)
        for entries, saved in self._lists:
            entries[:] = saved
        if isinstance(self._stepper, VectorAdam):
            self._stepper.cursor = self._cursor
        self._random.restore()
