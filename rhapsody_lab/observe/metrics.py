"""Live metrics of a session, per backend and overall, in bounded memory.

``Metrics`` is an event-stream subscriber. Its ``__call__`` only queues the batch (O(1) per
batch); a helper thread folds queued events into fixed-size ring buffers every
``ingest_interval`` seconds, vectorised with numpy, so observing costs a few hundred
nanoseconds per event instead of microseconds of Python per event. It keeps:

- per time bin (``bin_width`` s, the last ``max_bins``): task counts by state, tasks
  started and finished, busy slot-seconds, per backend;
- latency histograms (queue: QUEUED/SUBMITTED -> RUNNING, execution: RUNNING -> end);
- the task stream: the last ``max_rectangles`` (start, end, slot, state) bars.

Readers (dashboards) take a short lock and get plain columns; they never see raw events.
Only live tasks are remembered individually, so memory stays bounded at 100,000 tasks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

from ..api.errors import SessionError
from .columns import columns
from .metrics_read import (
    _NS,
    HIST_BINS,
    HIST_LOW,
    HIST_PER_DECADE,
    STATES,
    MetricsReaders,
    hist_range,
)

__all__ = ["STATES", "Metrics", "hist_range"]

_CODE = {s: i for i, s in enumerate(STATES)}
_RUNNING, _DONE, _CANCELED = 2, 3, 5
_CHUNK = 8_000  # events folded per lock hold (keeps readers' waits short)
_g0, _g1, _g2, _g3, _g4 = (itemgetter(i) for i in range(5))


def _np():
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy comes with the dashboard extra
        raise SessionError("rhapsody_lab.observe metrics need numpy; install it with "
                           "pip install 'rhapsody-lab[dashboard]'") from exc
    return numpy


class Metrics(MetricsReaders):
    """Counts, throughput, utilisation, latencies and the task stream of one session."""

    def __init__(self, *, bin_width: float = 0.5, max_bins: int = 7200,
                 max_rectangles: int = 10_000, window: float = 5.0,
                 capacity: Mapping[str, int] | Callable[[], Mapping[str, int]] | None = None,
                 live: bool = True, ingest_interval: float = 0.1):
        for field, value, low in (("bin_width", bin_width, 1e-3), ("window", window, 1e-3),
                                  ("ingest_interval", ingest_interval, 0.0)):
            if not isinstance(value, int | float) or value < low:
                raise SessionError(f"{field} must be a number of seconds >= {low}, "
                                   f"got {value!r}")
        for field, value in (("max_bins", max_bins), ("max_rectangles", max_rectangles)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SessionError(f"{field} must be an integer >= 1, got {value!r}")
        np = self._np = _np()
        self.bin_width = float(bin_width)
        self.window = float(window)
        self.max_bins = max_bins
        self.max_rectangles = max_rectangles
        self.live = live
        self._capacity_fn = capacity if callable(capacity) else None
        self.capacity: dict[str, int] = dict(capacity) if isinstance(capacity, Mapping) else {}
        self.backends: list[str] = []
        self._bidx: dict[str, int] = {}
        self._maxb = 4
        r = max_bins
        self._bcounts = np.zeros((r, self._maxb, _NS), np.int64)  # snapshot per bin
        self._started = np.zeros((r, self._maxb), np.int64)
        self._finished = np.zeros((r, self._maxb), np.int64)
        self._busy = np.zeros((r, self._maxb), np.float64)
        self._counts = np.zeros((self._maxb, _NS), np.int64)  # now
        self._qhist = np.zeros((self._maxb, HIST_BINS), np.int64)
        self._xhist = np.zeros((self._maxb, HIST_BINS), np.int64)
        self._first: int | None = None  # oldest bin kept
        self._cur: int | None = None    # newest bin
        self._last: dict[str, int] = {}   # live uid -> backend * 8 + state
        self._tq: dict[str, float] = {}   # uid -> time it was submitted/queued
        self._tr: dict[str, float] = {}   # running uid -> start
        self._rslot: dict[str, Any] = {}  # running uid -> slot
        # the task stream: bars kept as column chunks, one per fold (rows built on read)
        self._rects: deque[tuple] = deque()  # (n, start, end, uid, backend, slot, state)
        self._rects_held = 0              # bars in _rects (the newest max_rectangles+)
        self.rect_index = 0               # bars ever recorded (readers keep a cursor)
        self._rows: dict[tuple[str, Any], int] = {}
        self.total_tasks = 0
        self.events_seen = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._pending: deque[Sequence[tuple]] = deque()
        self._interval = float(ingest_interval)
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- feeding -----------------------------------------------------------------------
    def __call__(self, batch: Sequence[tuple]) -> None:
        """Event-stream subscriber: queue ``batch``; a helper thread folds it in."""
        self._pending.append(batch)
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="rhapsody-metrics")
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(self._interval)  # coalesce: fold many batches at once
            self._wake.clear()
            self.sync()

    def sync(self) -> Metrics:
        """Fold every queued batch in now (readers see them afterwards)."""
        pending = self._pending
        with self._sync_lock:  # one folder at a time, or batches could be reordered
            while pending:
                events: list[tuple] = []
                while pending and len(events) < 200_000:
                    events.extend(pending.popleft())
                self.ingest(events)
        return self

    def close(self) -> None:
        """Fold what is queued and stop the helper thread."""
        self.sync()
        self._closed = True
        self._wake.set()

    def ingest(self, events: Sequence[Sequence]) -> None:
        """Fold ``events`` (``(time, uid, state, backend, slot)`` tuples) in, in order."""
        if not events:
            return
        np = self._np
        self.ingest_columns(np.fromiter(map(_g0, events), np.float64, len(events)),
                            list(map(_g1, events)), list(map(_g2, events)),
                            list(map(_g3, events)), list(map(_g4, events)))

    def fold_items(self, items: Sequence[tuple]) -> None:
        """Event-stream subscriber taking runs (``runs=True``): fold their columns now, on
        the stream's delivery thread (its batching is the one buffer)."""
        self.fold_columns(columns(items))

    def fold_columns(self, cols: Any) -> None:
        """Fold ``observe.columns.Columns`` in now, in order (the observer process)."""
        if cols.uids:
            self.ingest_columns(self._np.array(cols.times, self._np.float64), cols.uids,
                                cols.states, cols.backends, cols.slots)

    def ingest_columns(self, times: Any, uids: list, states: list, backends: list,
                       slots: list) -> None:
        """Fold events given as columns (``times`` a float numpy array, in seconds)."""
        n = len(uids)
        if not n:
            return
        np = self._np
        bins = np.floor(times / self.bin_width).astype(np.int64)
        top = np.maximum.accumulate(bins)
        cuts = (np.flatnonzero(np.diff(top)) + 1).tolist()
        lo = 0
        for hi in [*cuts, n]:
            while lo < hi:
                end = min(hi, lo + _CHUNK)
                with self._lock:
                    self._apply(uids[lo:end], states[lo:end], backends[lo:end],
                                slots[lo:end], times[lo:end], bins[lo:end],
                                int(top[end - 1]))
                lo = end

    # -- bins ---------------------------------------------------------------------------
    def _register(self, name: str) -> None:
        np = self._np
        i = len(self.backends)
        self.backends.append(name)
        self._bidx[name] = i
        if name not in self.capacity and self._capacity_fn is not None:
            try:
                self.capacity.update(self._capacity_fn())
            except Exception:  # a backend that cannot say its capacity: utilisation is 0
                pass
        if i >= self._maxb:
            grow = self._maxb
            self._maxb *= 2
            pad = [(0, 0), (0, grow)]
            self._bcounts = np.pad(self._bcounts, [*pad, (0, 0)])
            self._started = np.pad(self._started, pad)
            self._finished = np.pad(self._finished, pad)
            self._busy = np.pad(self._busy, pad)
            self._counts = np.pad(self._counts, [(0, grow), (0, 0)])
            self._qhist = np.pad(self._qhist, [(0, grow), (0, 0)])
            self._xhist = np.pad(self._xhist, [(0, grow), (0, 0)])

    def _advance(self, b: int) -> None:
        """Make ``b`` the newest bin; bins skipped carry the counts forward."""
        cur = self._cur
        r = self.max_bins
        if cur is None or b - cur >= r:
            self._first = self._cur = b
            self._bcounts[:] = 0
            self._started[:] = 0
            self._finished[:] = 0
            self._busy[:] = 0
            self._bcounts[b % r] = self._counts
            return
        if b <= cur:
            return
        rows = [i % r for i in range(cur + 1, b + 1)]
        self._bcounts[rows] = self._counts
        self._started[rows] = 0
        self._finished[rows] = 0
        self._busy[rows] = 0
        self._cur = b
        if b - self._first >= r:
            self._first = b - r + 1

    def _apply(self, uids: list, states: list, names: list, slots: list, ts: Any,
               bins: Any, b: int) -> None:
        np = self._np
        n = len(uids)
        self._advance(b)
        first, r, nsb = self._first, self.max_bins, self._maxb
        for name in set(names):
            if name not in self._bidx:
                self._register(name)
        nsb = self._maxb
        codes = np.fromiter(map(_CODE.get, states, repeat(7)), np.int64, n)
        if len(self.backends) == 1:
            bc = np.zeros(n, np.int64)
        else:
            bc = np.fromiter(map(self._bidx.__getitem__, names), np.int64, n)
        self.events_seen += n
        t_min, t_max = float(ts.min()), float(ts.max())
        if self.first_time is None or t_min < self.first_time:
            self.first_time = t_min
        if self.last_time is None or t_max > self.last_time:
            self.last_time = t_max

        # counts by state now: each task's state before this chunk leaves, its last enters
        last = self._last
        final = dict(zip(uids, (bc * _NS + codes).tolist(), strict=False))
        old = np.fromiter(map(last.pop, final, repeat(-1)), np.int64, len(final))
        new = np.fromiter(final.values(), np.int64, len(final))
        size = nsb * _NS
        flat = self._counts.reshape(-1)
        known = old >= 0
        flat -= np.bincount(old[known], minlength=size)
        flat += np.bincount(new, minlength=size)
        self.total_tasks += int(len(old) - known.sum())
        term = ((new % _NS) >= _DONE) & ((new % _NS) <= _CANCELED)
        last.update(final)
        if term.any():
            for uid in compress(final, term.tolist()):
                last.pop(uid)
        # this bin and any later one already opened end with these counts
        self._bcounts[[i % r for i in range(max(b, first), self._cur + 1)]] = self._counts

        # per-bin started / finished, clipped to the bins still kept
        keep = bins >= first
        ring = bins % r
        is_run = codes == _RUNNING
        is_term = (codes >= _DONE) & (codes <= _CANCELED)
        m = is_run & keep
        if m.any():
            np.add.at(self._started, (ring[m], bc[m]), 1)
        m = is_term & keep
        if m.any():
            np.add.at(self._finished, (ring[m], bc[m]), 1)

        # queue latency: first QUEUED (else SUBMITTED) -> RUNNING
        is_wait = codes <= 1
        if is_wait.any():
            mask = is_wait.tolist()
            self._tq.update(zip(compress(uids, mask), ts[is_wait].tolist(), strict=False))
        if is_run.any():
            mask = is_run.tolist()
            ru = list(compress(uids, mask))
            rt = ts[is_run]
            q0 = np.fromiter(map(self._tq.pop, ru, repeat(math.nan)), np.float64, len(ru))
            self._hist(self._qhist, bc[is_run], rt - q0)
            self._tr.update(zip(ru, rt.tolist(), strict=False))
            self._rslot.update(zip(ru, compress(slots, mask), strict=False))
        if not is_term.any():
            return
        mask = is_term.tolist()
        tu = list(compress(uids, mask))
        te = ts[is_term]
        tb = bc[is_term]
        # canceled before running: forget its queue time (a C loop, no call per task)
        tq = self._tq
        for uid in tu:
            tq.pop(uid, None)
        st = np.fromiter(map(self._tr.pop, tu, repeat(math.nan)), np.float64, len(tu))
        rslots = list(map(self._rslot.pop, tu, repeat(None)))
        ran = ~np.isnan(st)
        if not ran.any():
            return
        dur = np.maximum(te - st, 0.0)
        self._hist(self._xhist, tb[ran], dur[ran])
        # busy slot-seconds per bin: the common case (start and end in one bin) vectorised
        w = self.bin_width
        sb = np.floor(st / w).astype(np.int64)
        eb = bins[is_term]
        one = ran & (sb == eb) & (eb >= first)
        if one.any():
            np.add.at(self._busy, (eb[one] % r, tb[one]), dur[one])
        for i in np.flatnonzero(ran & (sb < eb)).tolist():
            s, e, k = float(st[i]), float(te[i]), int(tb[i])
            for j in range(max(int(sb[i]), first), int(eb[i]) + 1):
                ov = min(e, (j + 1) * w) - max(s, j * w)
                if ov > 0:
                    self._busy[j % r, k] += ov
        # the task stream keeps the newest bars only, as columns (no tuple per bar)
        idx = np.flatnonzero(ran)[-self.max_rectangles:].tolist()
        if not idx:
            return
        tslots = list(compress(slots, mask))
        slots_ = [a if a is not None else b for a, b in zip(tslots, rslots, strict=True)]
        cols = (st.tolist(), te.tolist(), tu, list(compress(names, mask)), slots_,
                list(compress(states, mask)))
        if len(idx) != len(tu):
            pick = itemgetter(*idx) if len(idx) > 1 else (lambda c, i=idx[0]: (c[i],))
            cols = tuple(list(pick(c)) for c in cols)
        rows = self._rows
        for key in dict.fromkeys(zip(cols[3], cols[4], strict=True)):  # a few (backend, slot) pairs
            if key not in rows:
                rows[key] = len(rows)
        self._rects.append((len(idx), *cols))
        self._rects_held += len(idx)
        while self._rects_held - self._rects[0][0] >= self.max_rectangles:
            self._rects_held -= self._rects.popleft()[0]
        self.rect_index += len(idx)

    def _hist(self, hist: Any, bc: Any, values: Any) -> None:
        np = self._np
        ok = ~np.isnan(values)
        if not ok.any():
            return
        v = np.maximum(values[ok], 10.0 ** HIST_LOW)
        i = np.clip(((np.log10(v) - HIST_LOW) * HIST_PER_DECADE).astype(np.int64), 0,
                    HIST_BINS - 1)
        np.add.at(hist, (bc[ok], i), 1)
