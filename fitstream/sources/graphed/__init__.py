"""The graphed step (``cuda_graphs=True``): capture once, replay per batch.

- ``steps``: :class:`~.steps.GraphedSteps` (capture, replay, the short last batch) and the
  single model's step program;
- ``ensemble_step``: the ensemble's step program;
- ``cuda``: the CUDA calls (a stand-in replaces them in the CPU tests);
- ``snapshot``, ``step_state``: what a capture saves and restores, and the keys that tell when
  the model or optimizer changed.
"""
