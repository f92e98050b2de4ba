"""Observers of a session's event stream: live metrics and a crash-proof journal.

``attach_metrics(session)`` gives the shared ``Metrics`` (counts by state over time,
throughput, utilisation, latency distributions, task stream) that dashboards read;
``attach_journal(session)`` appends every event to a JSONL file in the session's work
dir; ``load(path)`` replays a journal into ``Metrics`` (``load_dataframe`` into pandas)
so a killed session can still be plotted. Only the event stream of ``rhapsody_lab.api``
is used here; numpy is needed for metrics (the ``dashboard`` extra brings it).

By default both run in one helper process per session (``observe.process``): the
kernel only marshals event batches onto a pipe, so observing 100,000 tasks does not
compete with task dispatch for the GIL; pass ``process=False`` to fold in the kernel.
"""

from .attach import attach_metrics
from .journal import Journal, attach_journal, load, load_dataframe, read_events
from .metrics import HIST_BINS, HIST_LOW, HIST_PER_DECADE, STATES, Metrics

__all__ = [
           "HIST_BINS",
           "HIST_LOW",
           "HIST_PER_DECADE",
           "STATES",
           "Journal",
           "Metrics",
           "attach_journal",
           "attach_metrics",
           "load",
           "load_dataframe",
           "read_events",
]
