"""Stream items as columns: what the journal writes and the metrics fold, never tuples.

The event stream delivers *items*: single events ``(time, uid, state, backend, slot)``
and runs ``(RUN, times, uids, state, backend, slots)`` (``api.events``), a run's times
and slots being one value or a list. ``columns(items)`` lays them out as five lists in
event order; a run extends them in a few C-level calls, so a drained batch of 4,000 tasks
is never expanded into 4,000 tuples and split back.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

__all__ = ["Columns", "columns"]


class Columns(NamedTuple):
    """Events in columns, in order: ``times`` in seconds since the epoch."""

    times: list[float]
    uids: list[str]
    states: list[str]
    backends: list[str]
    slots: list

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.uids)


def columns(items: Sequence[tuple]) -> Columns:
    """The events of stream ``items`` (events and runs) as ``Columns``."""
    cols = Columns([], [], [], [], [])
    times, uids, states, backends, slots = cols
    for item in items:
        if item[0].__class__ is str:  # a run (RUN, once unmarshalled: equal, not identical)
            _, t, u, state, backend, s = item
            n = len(u)
            times.extend(t if t.__class__ is list else repeat(t, n))
            uids.extend(u)
            states.extend(repeat(state, n))
            backends.extend(repeat(backend, n))
            slots.extend(s if s.__class__ is list else repeat(s, n))
        else:
            t, u, state, backend, s = item
            times.append(t)
            uids.append(u)
            states.append(state)
            backends.append(backend)
            slots.append(s)
    return cols
