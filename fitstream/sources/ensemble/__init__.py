"""The ensemble source: K models of one architecture trained as one.

- ``stream``: :func:`~fitstream.ensemble_stream`, its checks and its epochs;
- ``stacking``: :class:`~fitstream.Ensemble`, the members' tensors stacked into slabs;
- ``member_checks``, ``member_data``, ``member_losses``: what each member brings (one
  architecture, its own rows and hparams) and its loss under ``vmap``;
- ``epoch``, ``loop``: one epoch and one step of all members;
- ``optim``, ``sgd``, ``adam``, ``optim_state``: the vectorised optimizers and their state,
  seen through each member's own optimizer.
"""
