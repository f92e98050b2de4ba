"""Reading ``Metrics`` (any thread): the series, task rectangles, latency histograms,
counts and summary that dashboards plot. Readers take a short lock and get plain columns;
they never see raw events. Mixed into ``observe.metrics.Metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..api.errors import SessionError
from ..api.states import NEW, SHOWN_STATES, TERMINAL_STATES

__all__ = ["HIST_BINS", "HIST_LOW", "HIST_PER_DECADE", "STATES", "MetricsReaders",
           "hist_range"]

#: States in display order; index 7 collects anything unknown.
STATES: tuple[str, ...] = (*SHOWN_STATES, NEW)
_NS = 8
#: Latency histograms: log-scale buckets from 10**HIST_LOW s, HIST_PER_DECADE per decade.
HIST_LOW, HIST_PER_DECADE, HIST_BINS = -6, 10, 110  # 1 µs .. 1e5 s


def hist_range(latency: Mapping[str, Sequence], margin: int = 2, least: int = 10
               ) -> tuple[float, float]:
    """The x range (s) of ``Metrics.latency()`` bars worth showing: the populated buckets,
    ``margin`` buckets either side, at least ``least`` buckets wide (one decade)."""
    counts = [q + x for q, x in zip(latency["queue"], latency["execution"], strict=True)]
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        lo, hi = (-3 - HIST_LOW) * HIST_PER_DECADE, (1 - HIST_LOW) * HIST_PER_DECADE
    else:
        lo, hi = used[0] - margin, used[-1] + 1 + margin
        if hi - lo < least:
            pad = least - (hi - lo)
            lo, hi = lo - pad // 2, hi + pad - pad // 2
    lo, hi = max(lo, 0), min(hi, HIST_BINS)
    return (10.0 ** (HIST_LOW + lo / HIST_PER_DECADE), 10.0 ** (HIST_LOW + hi / HIST_PER_DECADE))


class MetricsReaders:
    """The reading half of ``Metrics`` (see the module docstring)."""

    # -- reading (any thread) ------------------------------------------------------------
    def now(self) -> float:
        """Wall-clock time while live; the last event's time for a finished journal."""
        if self.live:
            return time.time()
        return self.last_time if self.last_time is not None else 0.0

    def _sel(self, backend: str | None) -> Any:
        if backend is None:
            return slice(None)
        i = self._bidx.get(backend)
        if i is None:
            raise SessionError(f"no events from a backend named {backend!r} yet; known: "
                               f"{self.backends}")
        return i

    def series(self, backend: str | None = None, since: int | None = None
               ) -> tuple[int, dict[str, list]]:
        """Rows of time bins from bin ``since`` (or the oldest kept) to the newest.

        Returns ``(first_bin, columns)``: ``time`` (bin start, ms since the epoch, for
        Bokeh datetime axes), one column per state (tasks in it at the bin's end),
        ``started``/``finished`` (tasks per second, rolling over ``window``),
        ``busy`` (mean busy slots) and ``utilisation`` (busy / capacity). The newest bin
        is still open: read it again (and patch it) on the next call.
        """
        np = self._np
        with self._lock:
            if self._cur is None:
                return (since or 0), {}
            w, r = self.bin_width, self.max_bins
            now = self.now()
            if self.live:
                self._advance(int(now // w))
            first, cur = self._first, self._cur
            lo = first if since is None else max(since, first)
            if lo > cur:
                return lo, {}
            sel = self._sel(backend)
            nwin = max(1, round(self.window / w))
            ext = max(first, lo - nwin + 1)
            idx = np.arange(ext, cur + 1)
            ring = idx % r
            counts = self._bcounts[ring][:, sel]
            started = self._started[ring][:, sel]
            finished = self._finished[ring][:, sel]
            busy = self._busy[ring][:, sel].astype(np.float64)
            if backend is None:
                counts, started = counts.sum(axis=1), started.sum(axis=1)
                finished, busy = finished.sum(axis=1), busy.sum(axis=1)
                cap = sum(self.capacity.get(b, 0) for b in self.backends)
            else:
                cap = self.capacity.get(backend, 0)
            want = None if backend is None else self._bidx[backend]
            # tasks still running contribute up to now
            for uid, s in self._tr.items():
                if want is not None and self._last.get(uid, -1) // _NS != want:
                    continue
                for j in range(max(int(s // w), ext), cur + 1):
                    ov = min(now, (j + 1) * w) - max(s, j * w)
                    if ov > 0:
                        busy[j - ext] += ov
        secs = np.full(len(idx), w)
        secs[-1] = min(max(now - cur * w, 1e-3), w)
        k = lo - ext
        cs = np.concatenate([[0.0], np.cumsum(secs)])
        cst = np.concatenate([[0], np.cumsum(started)])
        cfi = np.concatenate([[0], np.cumsum(finished)])
        hi = np.arange(k, len(idx)) + 1
        lo_w = np.maximum(hi - nwin, 0)
        span = cs[hi] - cs[lo_w]
        data: dict[str, list] = {"time": (idx[k:] * w * 1000.0).tolist()}
        for i, s in enumerate(STATES):
            data[s] = counts[k:, i].tolist()
        data["started"] = ((cst[hi] - cst[lo_w]) / span).tolist()
        data["finished"] = ((cfi[hi] - cfi[lo_w]) / span).tolist()
        b = busy[k:] / secs[k:]
        data["busy"] = b.tolist()
        data["utilisation"] = (b / cap if cap else np.zeros_like(b)).tolist()
        return lo, data

    def rectangles(self, since: int = 0, limit: int | None = None
                   ) -> tuple[int, dict[str, list]]:
        """Task-stream bars recorded after cursor ``since`` (the newest ``limit`` of them);
        returns ``(cursor, columns)``.

        Columns: ``start``/``end`` (ms since the epoch), ``y`` (row), ``row`` (label
        ``backend/slot``), ``uid``, ``backend``, ``state``, ``duration`` (s).
        """
        with self._lock:
            total = self.rect_index
            n = min(total - since, self._rects_held, self.max_rectangles)
            if limit is not None:
                n = min(n, limit)
            parts = []
            need = n
            for chunk in reversed(self._rects):  # newest chunks first, until n bars
                if need <= 0:
                    break
                take = min(need, chunk[0])
                parts.append(tuple(c[chunk[0] - take:] for c in chunk[1:]))
                need -= take
            rows = dict(self._rows)
        cols: dict[str, list] = {k: [] for k in ("start", "end", "y", "row", "uid",
                                                 "backend", "state", "duration")}
        for start, end, uids, names, slots, states in reversed(parts):
            cols["start"] += [x * 1000.0 for x in start]
            cols["end"] += [x * 1000.0 for x in end]
            cols["y"] += [rows[k] for k in zip(names, slots, strict=True)]
            cols["row"] += [f"{a}/{b}" for a, b in zip(names, slots, strict=True)]
            cols["uid"] += uids
            cols["backend"] += names
            cols["state"] += states
            cols["duration"] += [e - s for s, e in zip(start, end, strict=True)]
        return total, cols

    def rows(self) -> dict[int, str]:
        """Task-stream row number -> ``backend/slot`` label."""
        with self._lock:
            return {y: f"{name}/{slot}" for (name, slot), y in self._rows.items()}

    def latency(self, backend: str | None = None) -> dict[str, list]:
        """Histograms: ``left``/``right`` bucket edges (s), ``queue``/``execution`` counts."""
        np = self._np
        with self._lock:
            sel = self._sel(backend) if self.backends else slice(None)
            q = self._qhist[sel]
            x = self._xhist[sel]
        if backend is None:
            q, x = q.sum(axis=0), x.sum(axis=0)
        edges = 10.0 ** (HIST_LOW + np.arange(HIST_BINS + 1) / HIST_PER_DECADE)
        return {"left": edges[:-1].tolist(), "right": edges[1:].tolist(),
                "queue": q.tolist(), "execution": x.tolist()}

    def counts(self, backend: str | None = None) -> dict[str, int]:
        """Tasks in each state now (only states with tasks)."""
        with self._lock:
            if not self.backends:
                return {}
            c = self._counts[self._sel(backend)]
            c = c.sum(axis=0) if backend is None else c
            return {s: int(v) for s, v in zip(STATES, c.tolist(), strict=False) if v}

    def summary(self) -> dict[str, Any]:
        """A small dictionary for text reprs and reports."""
        span = 0.0
        if self.first_time is not None and self.last_time is not None:
            span = self.last_time - self.first_time
        lat = self.latency()
        out: dict[str, Any] = {"total_tasks": self.total_tasks, "counts": self.counts(),
                               "span": span, "backends": list(self.backends),
                               "capacity": dict(self.capacity)}
        for key in ("queue", "execution"):
            out[f"{key}_p50"] = _quantile(lat["right"], lat[key], 0.5)
            out[f"{key}_p95"] = _quantile(lat["right"], lat[key], 0.95)
        done = sum(out["counts"].get(s, 0) for s in TERMINAL_STATES)
        out["throughput"] = done / span if span > 0 else 0.0
        return out


def _quantile(edges: list[float], counts: list[int], q: float) -> float:
    total = sum(counts)
    if not total:
        return 0.0
    seen = 0
    for edge, c in zip(edges, counts, strict=True):
        seen += c
        if seen >= q * total:
            return edge
    return edges[-1]
