"""The Optuna search driver, by concern.

- :mod:`.api`: :func:`search` and :func:`search_events`, their arguments;
- :mod:`.result`: :class:`SearchResult`, what :func:`search` gives back;
- :mod:`.driver`: the loop of one worker: fill the slots, step the ensembles, judge the trials;
- :mod:`.slots`: which trials train together, and where a new trial goes;
- :mod:`.trials`: one trial's members, curve and best epoch;
- :mod:`.rules`: what counts against ``n_trials``, and when the slots open (the first wave);
- :mod:`.book`: asking and telling the study, and the faults (interrupts, failed builds);
- :mod:`.asking`: a trial asked with its heartbeat stamp in its first write;
- :mod:`.heartbeat`: the held trials' heartbeat (chosen from the arguments), and failing the
  trials of dead workers;
- :mod:`.writes`: storage writes retried while locked, and whole under Ctrl-C;
- :mod:`.progress`: the bar and the log lines;
- :mod:`.saved`: each finished trial's best state saved, and :func:`load_best`;
- :mod:`.checks`: the arguments checked at the call.
"""

from .api import search, search_events
from .result import SearchResult
from .saved import load_best

__all__ = ["SearchResult", "load_best", "search", "search_events"]
