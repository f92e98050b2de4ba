"""The journal: every event of a session appended to a file, reloadable after a crash.

Format: JSON Lines, one line per delivered batch of events, in columns:
``{"t": [time_us, ...], "uid": [...], "state": [...], "backend": [...], "slot": [...]}``
(times in integer microseconds since the epoch), plus metadata lines
``{"meta": "session", "session": uid, "format": ..., "version": 2, "capacity": {...}}``
(the first line) and ``{"meta": "capacity", "backend": name, "slots": n}``.

Why JSONL, and why columns:

- appending a batch is one ``os.write`` of pre-encoded text on an ``O_APPEND`` descriptor:
  nothing stays in a user-space buffer, so a killed process loses nothing it wrote (the
  OS page cache survives it), and a torn last line is simply skipped on reading;
- a columnar batch encodes in a few C calls (~0.2 µs per event; a line per event costs
  ~4x that in repeated per-row encoding, integer times avoid float reprs) and parses as
  fast, so a 100,000-task journal loads in about a second; SQLite's ``executemany`` would
  release and re-take the GIL once per row and starve behind a busy event loop;
- pandas reads it: ``load_dataframe(path)``, or by hand
  ``pd.read_json(path, lines=True).dropna(subset=["t"]).explode(["t", "uid", "state",
  "backend", "slot"])``.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from ..api.errors import SessionError
from .columns import Columns, columns
from .journal_resources import RESOURCE_KEYS, journals_of, read_resources, track
from .metrics import Metrics

__all__ = ["COLUMNS", "FORMAT", "RESOURCE_KEYS", "Journal", "attach_journal", "journals_of",
           "load", "load_dataframe", "read_events", "read_resources"]

FORMAT = "rhapsody_lab.journal"
VERSION = 2
COLUMNS = ("time", "uid", "state", "backend", "slot")
_KEYS = ("t", "uid", "state", "backend", "slot")
_g0, _g1, _g2, _g3, _g4 = (itemgetter(i) for i in range(5))


def _slot_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    return repr(obj)


_encode = json.JSONEncoder(separators=(",", ":"), default=_slot_default,
                           check_circular=False).encode


def _micros(times: list[float]) -> list[int]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with the dashboard extra
        return [round(t * 1e6) for t in times]
    return np.rint(np.array(times, np.float64) * 1e6).astype(np.int64).tolist()


class _Tokens(dict):
    """Value -> its JSON text, computed once: a batch's few states, backends and slots."""

    def __missing__(self, value: Any) -> str:
        if len(self) >= 4096:  # pids, puids: new values keep coming in a long session
            self.clear()
        text = self[value] = _encode(value)
        return text


_names = _Tokens()  # states and backends (str)
_slots = _Tokens()  # slot numbers (int) and None
_ESCAPE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]').search  # a char JSON would escape


def _column(values: list, tokens: _Tokens, kind: type) -> str:
    """``values`` as a JSON array; joins cached tokens when every value is ``kind``/None."""
    if set(map(type, values)) <= {kind, type(None)}:
        return "[" + ",".join(map(tokens.__getitem__, values)) + "]"
    return _encode(values)  # anything else (a bool, a set, a float): the full encoder


def _strings(values: list) -> str:
    """Strings as a JSON array: joined as they are when none needs escaping."""
    if set(map(type, values)) == {str}:
        joined = '","'.join(values)
        if _ESCAPE(joined) is None:
            return '["' + joined + '"]'
    return _encode(values)


def encode_batch(batch: Sequence[tuple]) -> bytes:
    """Event tuples as one JSON line of columns (see ``encode_columns``)."""
    return encode_columns(Columns(list(map(_g0, batch)), list(map(_g1, batch)),
                                  list(map(_g2, batch)), list(map(_g3, batch)),
                                  list(map(_g4, batch))))


def encode_columns(cols: Columns) -> bytes:
    """Events in columns as one JSON line (integer-microsecond times).

    The same text ``json`` would write, built by joining cached tokens: the journal is the
    observer's biggest per-event cost.
    """
    if not cols.uids:
        return b""
    return ('{"t":' + _encode(_micros(cols.times)) + ',"uid":' + _strings(cols.uids)
            + ',"state":' + _column(cols.states, _names, str)
            + ',"backend":' + _column(cols.backends, _names, str)
            + ',"slot":' + _column(cols.slots, _slots, int) + "}\n").encode()


class Journal:
    """Appends event batches to ``path``; use as a session event subscriber."""

    def __init__(self, path: str | os.PathLike, *, session_uid: str = "",
                 capacity: Mapping[str, int] | Callable[[], Mapping[str, int]] | None = None,
                 fsync: bool = False):
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise SessionError(f"journal path must be a file path, got {path!r}")
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise SessionError(f"journal path {self.path!r}: folder {folder!r} does not "
                               "exist; create it or pass another path=")
        self._capacity_fn = capacity if callable(capacity) else None
        cap = dict(capacity() if callable(capacity) else capacity or {})
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                       0o644)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._known: set[str] = set(cap)
        self.events_written = 0
        meta = {"meta": "session", "session": session_uid, "format": FORMAT,
                "version": VERSION, "capacity": cap, "created": time.time(),
                "pid": os.getpid()}
        self._write((_encode(meta) + "\n").encode())

    def __call__(self, batch: Sequence[tuple]) -> None:
        """Event-stream subscriber: append ``batch`` (one write, flushed to the OS)."""
        if self._fd is not None and batch:
            self.write_columns(Columns(list(map(_g0, batch)), list(map(_g1, batch)),
                                       list(map(_g2, batch)), list(map(_g3, batch)),
                                       list(map(_g4, batch))))

    def write_items(self, items: Sequence[tuple]) -> None:
        """Event-stream subscriber taking runs (``runs=True``): append their columns."""
        self.write_columns(columns(items))

    def write_columns(self, cols: Columns) -> None:
        """Append events given as columns (one write, flushed to the OS)."""
        if self._fd is None or not cols.uids:
            return
        names = set(cols.backends)
        head = b""
        if not names <= self._known:
            head = self._capacity_lines(names - self._known)
        self._write(head + encode_columns(cols))
        self.events_written += len(cols.uids)

    def write_resources(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append resource readings (``RESOURCE_KEYS`` rows) as one columnar line."""
        if self._fd is not None and rows:
            line = {"meta": "resources", **{k: [r.get(k) for r in rows]
                                            for k in RESOURCE_KEYS}}
            self._write((_encode(line) + "\n").encode())

    def _capacity_lines(self, names: set[str]) -> bytes:
        cap: Mapping[str, int] = {}
        if self._capacity_fn is not None:
            try:
                cap = self._capacity_fn()
            except Exception:
                cap = {}
        self._known |= names
        return b"".join((_encode({"meta": "capacity", "backend": name,
                                  "slots": cap.get(name)}) + "\n").encode()
                        for name in sorted(names))

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self._fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        """Stop writing (what was written stays)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @property
    def open(self) -> bool:
        return self._fd is not None

    def __repr__(self) -> str:
        return f"<Journal {self.path} events={self.events_written}>"


def attach_journal(session: Any, path: str | os.PathLike | None = None, *,
                   fsync: bool = False, process: bool = True) -> Any:
    """Journal every later event of ``session`` to ``path``; returns the journal.

    The default path is ``<session.work_dir>/<session.uid>.journal.jsonl``. With
    ``process=True`` (default) the session's observer process writes it (the kernel only
    hands it marshalled batches; see ``observe.process``), else a ``Journal`` in this
    process does. ``journal.close()`` stops it; the session's close ends it too.
    """
    events = getattr(session, "events", None)
    if events is None or not hasattr(events, "subscribe"):
        raise SessionError(f"attach_journal needs a rhapsody_lab Session, got "
                           f"{type(session).__name__}")
    if path is None:
        path = os.path.join(session.work_dir, f"{session.uid}.journal.jsonl")
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise SessionError(f"journal path must be a file path, got {path!r}")
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise SessionError(f"journal path {path!r}: folder {folder!r} does not exist; "
                           "create it or pass another path=")
    backends = session.backends

    def capacity() -> dict[str, int]:
        return {name: b.capacity() for name, b in list(backends.items())}

    if process:
        from .process import RemoteJournal, observer_for
        try:
            observer = observer_for(session)
        except OSError:
            observer = None
        if observer is not None:
            observer.request("open_journal", path, session.uid, capacity(), fsync)
            return track(session, RemoteJournal(observer, path))
    journal = Journal(path, session_uid=session.uid, capacity=capacity, fsync=fsync)
    events.subscribe(journal.write_items, runs=True)  # runs stay columns
    return track(session, journal)


# -- reading --------------------------------------------------------------------------
class _Loaded:
    """A journal read back: event columns, session metadata, capacity."""

    __slots__ = ("capacity", "columns", "meta", "resources", "skipped")

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise SessionError(f"journal path must be a file path, got {path!r}")
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise SessionError(f"journal {p!r} does not exist")
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.meta: dict[str, Any] = {}
        self.capacity: dict[str, int] = {}
        self.resources: list[dict[str, Any]] = []
        cols: dict[str, list] = {k: [] for k in _KEYS}
        self.skipped = 0  # damaged lines left out: torn, not JSON, wrong shapes or types
        loads = json.loads
        for line in text.split("\n"):
            if not line:
                continue
            try:
                obj = loads(line)
            except json.JSONDecodeError:
                self.skipped += 1  # a torn last line (the writer died mid-write) or damage
                continue
            if not isinstance(obj, dict):
                self.skipped += 1
                continue
            kind = obj.get("meta")
            if kind == "session":
                cap = obj.get("capacity") or {}
                if not isinstance(cap, dict):
                    self.skipped += 1
                    continue
                self.meta = obj
                self.capacity.update((k, v) for k, v in cap.items() if _is_int(v))
            elif kind == "resources":
                parts = [obj.get(k) for k in RESOURCE_KEYS]
                if not all(isinstance(p, list) and len(p) == len(parts[0]) for p in parts):
                    self.skipped += 1
                    continue
                self.resources += [dict(zip(RESOURCE_KEYS, row, strict=True))
                                   for row in zip(*parts, strict=True)]
            elif kind == "capacity":
                if _is_int(obj.get("slots")) and isinstance(obj.get("backend"), str):
                    self.capacity[obj["backend"]] = obj["slots"]
            elif kind is None:
                parts = [obj.get(k) for k in _KEYS]
                if not _good_columns(parts):
                    self.skipped += 1  # missing, uneven or mistyped columns: damage
                    continue
                for k, v in zip(_KEYS, parts, strict=True):
                    cols[k].extend(v)
        self.columns = cols


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_NUMBERS = {int, float}
_STRS = {str}


def _good_columns(parts: list) -> bool:
    """Five lists of one length: numeric times, str uids, states and backends."""
    if any(p.__class__ is not list for p in parts) or len(set(map(len, parts))) != 1:
        return False
    t, uid, state, backend, _slot = parts
    if not set(map(type, t)) <= _NUMBERS or not all(map(math.isfinite, t)):
        return False
    return set(map(type, uid)) <= _STRS and set(map(type, state)) <= _STRS and \
        set(map(type, backend)) <= _STRS


def read_events(path: str | os.PathLike) -> Iterator[tuple]:
    """The task events of a journal as ``(time, uid, state, backend, slot)`` tuples."""
    c = _Loaded(path).columns
    for t, uid, state, backend, slot in zip(*(c[k] for k in _KEYS), strict=True):
        yield (t / 1e6, uid, state, backend, slot)


def load(path: str | os.PathLike, *, bin_width: float | None = None,
         max_rectangles: int = 100_000) -> Metrics:
    """Replay a journal into a (finished, not live) ``Metrics`` for plots and reports.

    ``bin_width`` defaults to a width that keeps the whole session in about 300 bins.
    ``metrics.meta`` holds the journal's session metadata; ``metrics.skipped_lines``
    counts the damaged lines left out (torn, not JSON, columns of wrong lengths or types).
    """
    import numpy as np
    loaded = _Loaded(path)
    c = loaded.columns
    times = np.asarray(c["t"], dtype=np.float64) / 1e6
    span = float(times.max() - times.min()) if len(times) else 0.0
    if bin_width is None:
        bin_width = _nice_width(span / 300.0)
    nbins = max(2_000, int(span / bin_width) + 2)
    metrics = Metrics(bin_width=bin_width, max_bins=nbins, max_rectangles=max_rectangles,
                      capacity=loaded.capacity, live=False, window=max(5 * bin_width, 1.0))
    metrics.ingest_columns(times, c["uid"], c["state"], c["backend"], c["slot"])
    metrics.meta = loaded.meta  # type: ignore[attr-defined]
    metrics.skipped_lines = loaded.skipped  # type: ignore[attr-defined]
    metrics.path = os.fspath(path)  # type: ignore[attr-defined]
    return metrics


def _nice_width(w: float) -> float:
    for nice in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600):
        if w <= nice:
            return float(nice)
    return float(int(w) + 1)


def load_dataframe(path: str | os.PathLike):
    """The task events of a journal as a pandas DataFrame.

    Columns: ``time`` (s since the epoch, float), ``uid``, ``state``, ``backend``,
    ``slot``, plus ``timestamp`` (pandas datetime, UTC).
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover
        raise SessionError("load_dataframe needs pandas; install it with "
                           "pip install 'rhapsody-lab[dashboard]'") from exc
    c = _Loaded(path).columns
    df = pd.DataFrame({"time": c["t"], "uid": c["uid"], "state": c["state"],
                       "backend": c["backend"], "slot": c["slot"]})
    df["timestamp"] = pd.to_datetime(df["time"], unit="us", utc=True)
    df["time"] = df["time"] / 1e6
    return df
