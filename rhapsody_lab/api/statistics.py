"""Session statistics computed from the event stream, O(1) per event, bounded memory.

Only live tasks are remembered (their state and three timestamps); finished tasks leave
running sums and fixed-size log-scale histograms behind, so 100,000 tasks cost the same
memory as 10.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter, sub
from typing import Any

from .events import run_events
from .states import STATES, TERMINAL_STATES

__all__ = ["LatencyHistogram", "Statistics"]

_TOP = 3 if sys.byteorder == "little" else 0  # the 16-bit word of a double holding its top
_STAMP = {"QUEUED": 2, "RUNNING": 3}  # where a live record keeps the time of that state
_STATE_OF, _T0, _TQ, _TS = (itemgetter(i) for i in range(4))  # of a live record
_UNSET = object()  # no backend seen yet in a batch (None is a backend name here too)


def _zero_counts() -> dict[str, int]:
    """A plain dict with every state at 0 (faster than Counter on the hot path)."""
    return dict.fromkeys(STATES, 0)


class LatencyHistogram:
    """Log-scale histogram of seconds: 16 buckets an octave (3-6% wide), any range.

    A value's bucket is the top 16 bits (sign, exponent and 4 mantissa bits) of its IEEE-754
    double, read straight from an array of the values, so a whole batch is binned in C
    (array, memoryview, Counter): no Python call per value.
    """

    __slots__ = ("buckets", "max", "min", "n", "total")
    _SHIFT = 48  # 64 bits - 1 sign - 11 exponent - 4 mantissa bits kept

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
        self.n += len(values)
        self.total += sum(values)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        self.buckets.update(memoryview(array("d", values)).cast("B").cast("H")[_TOP::4])

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


class _Ended:
    """Latencies of the tasks one batch finished, in event order (summed in that order)."""

    __slots__ = ("count", "last", "queues", "runs", "totals")

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.queues: list[float] = []
        self.runs: list[float] = []
        self.count = 0
        self.last = 0.0

    def add_records(self, recs: list[tuple]) -> None:
        """``(t_submit, t_queued, t_running, t_end)`` records (None: not seen), one by one."""
        add_total, add_queue, add_run = self.totals.append, self.queues.append, \
            self.runs.append
        last = self.last
        for t0, tq, ts, t in recs:
            add_total(t - t0)
            if t > last:
                last = t
            if ts is not None:
                add_queue(ts - (tq if tq is not None else t0))
                add_run(t - ts)
        self.last = last
        self.count += len(recs)

    def add_columns(self, t0: list, tq: list, ts: list, ends: list) -> None:
        """The same as columns: in C-level passes when every task was queued and ran."""
        try:
            queues = list(map(sub, ts, tq))
            runs = list(map(sub, ends, ts))
        except TypeError:  # a None: some task skipped QUEUED or RUNNING
            self.add_records(list(zip(t0, tq, ts, ends, strict=True)))
            return
        self.totals += map(sub, ends, t0)
        self.queues += queues
        self.runs += runs
        last = max(ends)
        if last > self.last:
            self.last = last
        self.count += len(ends)


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
        finished: list[tuple] = []
        self._fold(batch, finished)
        if finished:
            acc = _Ended()
            acc.add_records(finished)
            self._record(acc)

    def _fold(self, batch: Sequence[tuple], finished: list[tuple]) -> None:
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
            elif state in TERMINAL_STATES:
                del live[uid]
                done((rec[1], rec[2], rec[3], t))
        if new:
            self.total_tasks += new
            if self.first_time is None:
                self.first_time = first

    def fold_items(self, items: Sequence[tuple]) -> None:
        """Fold stream items in order: event tuples, and runs of events (``EventStream.
        emit_run`` records) at once where every task of the run moves the same way."""
        events: list[tuple] = []
        finished: list[tuple] = []
        acc = _Ended()
        for item in items:
            if item[0].__class__ is str:  # a run
                if events:
                    self._fold(events, finished)
                    events = []
                if finished:
                    acc.add_records(finished)
                    finished = []
                if not self._fold_run(acc, *item[1:]):
                    self._fold(list(run_events(*item[1:])), finished)
            else:
                events.append(item)
        if events:
            self._fold(events, finished)
        if finished:
            acc.add_records(finished)
        if acc.count:
            self._record(acc)

    def _fold_run(self, acc: _Ended, times: Any, uids: list, state: str, backend: Any,
                  _slots: Any) -> bool:
        """Fold one run in C-level passes; False (nothing changed) if it needs the
        event-by-event path: a task new here outside a SUBMITTED run, tasks coming from
        different states, a repeated state or a uid twice in the run."""
        n = len(uids)
        if not n:
            return True  # an empty run: no events
        live = self._live
        stamps = times if times.__class__ is list else [times] * n
        if state == "SUBMITTED":
            if any(map(live.__contains__, uids)):
                return False
            before = len(live)
            live.update(zip(uids, map(list, zip(repeat(state), stamps, repeat(None),
                                                 repeat(None))), strict=False))
            added = len(live) - before
            if added != n:  # a uid twice: counted once, stamped first, as event by event
                for uid, t in reversed(list(zip(uids, stamps, strict=False))):
                    live[uid][1] = t
            self._counts_of(backend)[state] += added
            self.total_tasks += added
            if self.first_time is None:
                self.first_time = stamps[0]
            return True
        try:
            recs = list(map(live.__getitem__, uids))
        except KeyError:  # a task new here
            return False
        prev = recs[0][0]
        if prev == state or list(map(_STATE_OF, recs)).count(prev) != n:
            return False
        if state in TERMINAL_STATES:
            before = len(live)
            for uid in uids:
                live.pop(uid, None)
            if before - len(live) != n:  # a uid twice: put them back, go event by event
                live.update(zip(uids, recs, strict=False))
                return False
            acc.add_columns(list(map(_T0, recs)), list(map(_TQ, recs)),
                            list(map(_TS, recs)), stamps)
        elif len(set(uids)) != n:
            return False
        else:
            at = _STAMP.get(state)
            if at is not None:
                for rec, stamp in zip(recs, stamps, strict=True):
                    rec[at] = stamp
            for rec in recs:
                rec[0] = state
        counts = self._counts_of(backend)
        counts[prev] -= n
        counts[state] += n
        return True

    def _counts_of(self, backend: Any) -> dict[str, int]:
        counts = self.by_backend.get(backend)
        if counts is None:
            counts = self.by_backend[backend] = _zero_counts()
        return counts

    def _record(self, acc: _Ended) -> None:
        """Add a batch's finished tasks to the histograms and the throughput window."""
        if not self._live:
            self._live = {}  # a dict never shrinks: let a burst's table go
        self.total.extend(acc.totals)
        self.queue.extend(acc.queues)
        self.execution.extend(acc.runs)
        last = acc.last
        if self.last_time is not None and self.last_time > last:
            last = self.last_time
        self.last_time = last
        self.finished += acc.count
        second = int(last)
        w = self._window
        if w and w[-1][0] == second:
            w[-1] = (second, w[-1][1] + acc.count)
        else:
            w.append((second, acc.count))
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
