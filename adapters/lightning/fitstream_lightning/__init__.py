"""fitstream-lightning: a Lightning ``Trainer``'s epochs as a FitStream stream of events.

* :func:`fit_stream` runs ``trainer.fit(...)`` as an iterator of per-epoch events, to be
  transformed with :func:`fitstream.pipe` and FitStream's stages and sinks.
* :class:`StreamCallback` goes the other way: a Lightning callback that pushes each epoch's
  event through FitStream stages inside an unchanged ``trainer.fit(...)``.
"""

from ._distributed import OtherRankFailed
from .callback import StreamCallback
from .stream import fit_stream

__version__ = "0.7.0"
"""The version of the package, defined here only (the build reads it from this line)."""

__all__ = ["OtherRankFailed", "StreamCallback", "fit_stream"]
