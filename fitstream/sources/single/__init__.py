"""The single-model source: :func:`~fitstream.epoch_stream` and its per-batch loop."""
