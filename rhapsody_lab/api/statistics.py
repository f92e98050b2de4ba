"""Session statistics computed from the event stream, O(1) per event, bounded memory.

Only live tasks are remembered (their state and three timestamps); finished tasks leave
running sums and fixed-size log-scale histograms behind, so 100,000 tasks cost the same
memory as 10.
"""

from __future__ import annotations

import math
import struct
from collections import Counter, deque
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter, rshift, setitem
from typing import Any

from .events import run_events

__all__ = ["LatencyHistogram", "Statistics"]

_TERMINAL = frozenset(("DONE", "FAILED", "CANCELED"))
_UNSET = object()  # no backend seen yet in a batch (None is a backend name here too)
_STATES = ("NEW", "SUBMITTED", "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELED")
_STAMP = {"QUEUED": 2, "RUNNING": 3}  # where a live record keeps the time of that state
_STATE_OF = itemgetter(0)


def _zero_counts() -> dict[str, int]:
    """A plain dict with every state at 0 (faster than Counter on the hot path)."""
    return dict.fromkeys(_STATES, 0)


class LatencyHistogram:
    """Log-scale histogram of seconds: 8 buckets an octave (6-12.5% wide), any range.

    A value's bucket is the top bits (exponent and 3 mantissa bits) of its IEEE-754 double,
    so a whole batch is binned in C (struct, map, Counter): no Python call per value.
    """

    __slots__ = ("buckets", "max", "min", "n", "total")
    _SHIFT = 49  # 64 bits - 1 sign - 11 exponent - 3 mantissa bits kept

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, value: float) -> None:
        self.extend([value])

    def extend(self, values: list[float]) -> None:
        """Add many values at once (negative ones count as 0)."""
        if not values:
            return
        lo, hi = min(values), max(values)
        if lo < 0.0:
            values = [v if v > 0.0 else 0.0 for v in values]
            lo = 0.0
            hi = max(hi, 0.0)
        n = len(values)
        self.n += n
        self.total += sum(values)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        bits = struct.unpack(f"<{n}q", struct.pack(f"<{n}d", *values))
        self.buckets.update(map(rshift, bits, repeat(self._SHIFT)))

    def quantile(self, q: float) -> float:
        """Approximate ``q`` quantile (upper edge of its bucket, clipped to min/max)."""
        if not self.n:
            return 0.0
        rank = q * self.n
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                edge = struct.unpack("<d", struct.pack("<q", (key + 1) << self._SHIFT))[0]
                return min(max(edge, self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {"count": 0, "mean": 0.0, "min": 0.0, "p50": 0.0, "p95": 0.0,
                    "p99": 0.0, "max": 0.0}
        return {"count": self.n, "mean": self.total / self.n, "min": self.min,
                "p50": self.quantile(0.5), "p95": self.quantile(0.95),
                "p99": self.quantile(0.99), "max": self.max}


class Statistics:
    """An inline event subscriber that keeps counts, latencies and throughput."""

    def __init__(self) -> None:
        self.by_backend: dict[str, dict[str, int]] = {}
        self._live: dict[str, list] = {}  # uid -> [state, t_submit, t_queued, t_running]
        self.total = LatencyHistogram()
        self.queue = LatencyHistogram()
        self.execution = LatencyHistogram()
        self.total_tasks = 0
        self.finished = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self._window: list[tuple[float, int]] = []  # (second, finished in it), last 10 s

    @property
    def counts(self) -> dict[str, int]:
        """Tasks in each state now, over all backends (summed from ``by_backend``)."""
        total = _zero_counts()
        for per in list(self.by_backend.values()):
            for state, n in per.items():
                total[state] += n
        return total

    def __call__(self, batch: Sequence[tuple]) -> None:
        """Fold a batch of event tuples (an inline event-stream subscriber)."""
        finished: list[list] = []
        self._fold(batch, finished)
        if finished:
            self._finished(finished)

    def _fold(self, batch: Sequence[tuple], finished: list[list]) -> None:
        """Fold event tuples; the records of tasks they finish go to ``finished``."""
        # The hot path of observation: plain locals, one dict of counts per event (the
        # backend's; the overall counts are summed when read), no calls for the common
        # transitions. A task's first event also counts it as SUBMITTED.
        live = self._live
        by_backend = self.by_backend
        done = finished.append
        name: Any = _UNSET
        bc: Any = None
        new = 0
        first = None
        for t, uid, state, backend, _slot in batch:
            if backend is not name:
                bc = by_backend.get(backend)
                if bc is None:
                    bc = by_backend[backend] = _zero_counts()
                name = backend
            rec = live.get(uid)
            if rec is None:  # a new task (its first event, normally SUBMITTED)
                live[uid] = rec = ["SUBMITTED", t, None, None]
                bc["SUBMITTED"] += 1
                new += 1
                if first is None:
                    first = t
                if state == "SUBMITTED":
                    continue
            prev = rec[0]
            if prev == state:
                continue
            bc[prev] -= 1
            bc[state] += 1
            rec[0] = state
            if state == "RUNNING":
                rec[3] = t
            elif state == "QUEUED":
                rec[2] = t
            elif state in _TERMINAL:
                del live[uid]
                rec.append(t)
                done(rec)
        if new:
            self.total_tasks += new
            if self.first_time is None:
                self.first_time = first

    def fold_items(self, items: Sequence[tuple]) -> None:
        """Fold stream items in order: event tuples, and runs of events (``EventStream.
        emit_run`` records) at once where every task of the run moves the same way."""
        events: list[tuple] = []
        finished: list[list] = []
        for item in items:
            if item[0].__class__ is str:  # a run
                if events:
                    self._fold(events, finished)
                    events = []
                if not self._fold_run(finished, *item[1:]):
                    self._fold(list(run_events(*item[1:])), finished)
            else:
                events.append(item)
        if events:
            self._fold(events, finished)
        if finished:
            self._finished(finished)

    def _fold_run(self, finished: list[list], times: Any, uids: list, state: str,
                  backend: Any, _slots: Any) -> bool:
        """Fold one run in C-level passes; False (nothing changed) if it needs the
        event-by-event path: a task new here outside a SUBMITTED run, tasks coming from
        different states, a repeated state or a uid twice in the run."""
        n = len(uids)
        live = self._live
        recs = list(map(live.get, uids))
        if state == "SUBMITTED":
            if recs.count(None) != n:
                return False
            before = len(live)
            stamps = times if times.__class__ is list else [times] * n
            live.update(zip(uids, map(list, zip(repeat(state), stamps, repeat(None),
                                                 repeat(None))), strict=False))
            added = len(live) - before
            if added != n:  # a uid twice: counted once, stamped first, as event by event
                for uid, t in reversed(list(zip(uids, stamps, strict=False))):
                    live[uid][1] = t
            self._counts_of(backend)[state] += added
            self.total_tasks += added
            if self.first_time is None:
                self.first_time = times[0] if times.__class__ is list else times
            return True
        if None in recs:
            return False
        prev = recs[0][0]
        if prev == state or list(map(_STATE_OF, recs)).count(prev) != n \
                or len(set(uids)) != n:
            return False
        counts = self._counts_of(backend)
        counts[prev] -= n
        counts[state] += n
        deque(map(setitem, recs, repeat(0), repeat(state)), maxlen=0)
        stamps = times if times.__class__ is list else repeat(times, n)
        at = _STAMP.get(state)
        if at is not None:
            deque(map(setitem, recs, repeat(at), stamps), maxlen=0)
        elif state in _TERMINAL:
            deque(map(live.pop, uids), maxlen=0)
            deque(map(list.append, recs, stamps), maxlen=0)
            finished += recs
        return True

    def _counts_of(self, backend: Any) -> dict[str, int]:
        counts = self.by_backend.get(backend)
        if counts is None:
            counts = self.by_backend[backend] = _zero_counts()
        return counts

    def _finished(self, recs: list[list]) -> None:
        if not self._live:
            self._live = {}  # a dict never shrinks: let a burst's table go
        totals: list[float] = []
        queues: list[float] = []
        runs: list[float] = []
        add_total, add_queue, add_run = totals.append, queues.append, runs.append
        last = 0.0
        for _state, t0, tq, ts, t in recs:
            add_total(t - t0)
            if t > last:
                last = t
            if ts is not None:
                add_queue(ts - (tq if tq is not None else t0))
                add_run(t - ts)
        self.total.extend(totals)
        self.queue.extend(queues)
        self.execution.extend(runs)
        if self.last_time is not None and self.last_time > last:
            last = self.last_time
        self.last_time = last
        self.finished += len(recs)
        second = int(last)
        w = self._window
        if w and w[-1][0] == second:
            w[-1] = (second, w[-1][1] + len(recs))
        else:
            w.append((second, len(recs)))
            if len(w) > 11:
                del w[0]

    def snapshot(self) -> dict[str, Any]:
        """The dictionary ``Session.get_statistics()`` returns (times in seconds)."""
        counts = Counter({k: v for k, v in self.counts.items() if v > 0})
        span = 0.0
        if self.first_time is not None and self.last_time is not None:
            span = max(self.last_time - self.first_time, 0.0)
        recent = sum(c for _, c in self._window[:-1][-10:])
        recent_span = min(len(self._window[:-1]), 10)
        return {
            "counts": counts,
            "summary": {
                "total_tasks": self.total_tasks,
                "finished_tasks": self.finished,
                "avg_total": self.total.total / self.total.n if self.total.n else 0.0,
                "avg_queue": self.queue.total / self.queue.n if self.queue.n else 0.0,
                "avg_execution": (self.execution.total / self.execution.n
                                  if self.execution.n else 0.0),
            },
            "latencies": {"total": self.total.summary(), "queue": self.queue.summary(),
                          "execution": self.execution.summary()},
            "throughput": {
                "overall": self.finished / span if span > 0 else 0.0,
                "recent": recent / recent_span if recent_span else 0.0,
                "span": span,
            },
            "backends": {name: Counter({k: v for k, v in c.items() if v > 0})
                         for name, c in self.by_backend.items()},
        }
