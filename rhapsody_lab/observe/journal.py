"""The journal: every event of a session appended to a file, reloadable after a crash.

Format: JSON Lines, one event per line, ``[time_us, uid, state, backend, slot]`` with the
time in integer microseconds since the epoch. Why JSONL and not SQLite:

- appending a batch is one ``os.write`` of pre-encoded text on an ``O_APPEND`` descriptor:
  nothing stays in a user-space buffer, so a killed kernel loses nothing that was written
  (the OS page cache survives the process), and a torn last line is simply skipped;
- encoding a batch is a handful of C calls (integer times avoid costly float reprs),
  while SQLite's ``executemany`` releases and re-takes the GIL once per row and then
  starves behind a busy event loop;
- it is plain text: ``pandas.read_json(path, lines=True)`` reads it (columns 0-4), and
  ``load_dataframe`` names the columns.

Lines whose state starts with ``#`` carry metadata, not task events:
``[t, session_uid, "#session", "", {"format": ..., "version": 1, "capacity": {...}}]`` and
``[t, "", "#capacity", backend, slots]`` when a backend first appears.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from ..api.errors import SessionError
from .metrics import Metrics

__all__ = [
    "COLUMNS",
    "FORMAT",
    "Journal",
    "attach_journal",
    "load",
    "load_dataframe",
    "read_events",
]

FORMAT = "rhapsody_lab.journal"
VERSION = 1
COLUMNS = ("time", "uid", "state", "backend", "slot")
_g0, _g1, _g2, _g3, _g4 = (itemgetter(i) for i in range(5))


def _slot_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    return repr(obj)


_encode = json.JSONEncoder(separators=(",", ":"), default=_slot_default,
                           check_circular=False).encode


def _micros(batch: Sequence[tuple]) -> list[int]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with the dashboard extra
        return [round(t * 1e6) for t in map(_g0, batch)]
    ts = np.fromiter(map(_g0, batch), np.float64, len(batch))
    return np.rint(ts * 1e6).astype(np.int64).tolist()


def encode_lines(batch: Sequence[tuple]) -> bytes:
    """``batch`` as JSON lines (one event a line, integer-microsecond times)."""
    n = len(batch)
    if not n:
        return b""
    rows = list(zip(_micros(batch), map(_g1, batch), map(_g2, batch), map(_g3, batch),
                    map(_g4, batch), strict=True))
    text = _encode(rows)
    # one C-level encode for the whole batch, then split between rows; a "],[" inside a
    # value (a nested slot, an odd uid) makes the count differ: encode row by row then
    if text.count("],[") == n - 1:
        return (text[1:-1].replace("],[", "]\n[") + "\n").encode()
    return "".join(_encode(row) + "\n" for row in rows).encode()


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
        meta = {"format": FORMAT, "version": VERSION, "capacity": cap,
                "created": time.time(), "pid": os.getpid()}
        self._write(_encode([round(time.time() * 1e6), session_uid, "#session", "", meta])
                    .encode() + b"\n")

    def __call__(self, batch: Sequence[tuple]) -> None:
        """Event-stream subscriber: append ``batch`` (one write, flushed to the OS)."""
        if self._fd is None:
            return
        names = set(map(_g3, batch))
        head = b""
        if not names <= self._known:
            head = self._capacity_lines(names - self._known)
        self._write(head + encode_lines(batch))
        self.events_written += len(batch)

    def _capacity_lines(self, names: set[str]) -> bytes:
        cap: Mapping[str, int] = {}
        if self._capacity_fn is not None:
            try:
                cap = self._capacity_fn()
            except Exception:
                cap = {}
        now = round(time.time() * 1e6)
        self._known |= names
        return b"".join(_encode([now, "", "#capacity", name, cap.get(name)]).encode() + b"\n"
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
            return RemoteJournal(observer, path)
    journal = Journal(path, session_uid=session.uid, capacity=capacity, fsync=fsync)
    events.subscribe(journal)
    return journal


# -- reading --------------------------------------------------------------------------
def _rows(path: str | os.PathLike) -> tuple[list[list], int]:
    """The journal's rows, and how many metadata lines its text holds."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise SessionError(f"journal {p!r} does not exist")
    with open(p, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not text.endswith("\n"):  # the writer died mid-line: drop the torn line
        text = text[:text.rfind("\n") + 1]
    body = text.rstrip("\n")
    if not body.strip():
        return [], 0
    markers = body.count('"#session","') + body.count('"#capacity","')
    try:
        return json.loads("[" + body.replace("\n", ",") + "]"), markers
    except json.JSONDecodeError:
        rows = []
        for line in body.split("\n"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line; keep the rest
            if isinstance(row, list) and len(row) == 5:
                rows.append(row)
        return rows, -1


class _Loaded:
    __slots__ = ("capacity", "events", "meta")

    def __init__(self, rows: list[list], markers: int = -1):
        self.meta: dict[str, Any] = {}
        self.capacity: dict[str, int] = {}
        if markers == 1 and rows and rows[0][2] == "#session":
            meta = [0]  # the usual case, found without a Python pass over every row
        else:
            meta = [i for i, state in enumerate(map(_g2, rows))
                    if not isinstance(state, str) or state.startswith("#")]
        for i in meta:
            row = rows[i]
            if row[2] == "#session" and isinstance(row[4], dict):
                self.meta = dict(row[4], session=row[1])
                self.capacity.update(row[4].get("capacity") or {})
            elif row[2] == "#capacity" and isinstance(row[4], int):
                self.capacity[row[3]] = row[4]
        if meta == [0]:  # the usual case: one header line
            self.events = rows[1:]
        elif meta:
            drop = set(meta)
            self.events = [r for i, r in enumerate(rows) if i not in drop]
        else:
            self.events = rows


def read_events(path: str | os.PathLike) -> Iterator[tuple]:
    """The task events of a journal as ``(time, uid, state, backend, slot)`` tuples."""
    for t, uid, state, backend, slot in _Loaded(*_rows(path)).events:
        yield (t / 1e6, uid, state, backend, slot)


def load(path: str | os.PathLike, *, bin_width: float | None = None,
         max_rectangles: int = 100_000) -> Metrics:
    """Replay a journal into a (finished, not live) ``Metrics`` for plots and reports.

    ``bin_width`` defaults to a width that keeps the whole session in about 300 bins.
    ``metrics.meta`` holds the journal's session metadata.
    """
    loaded = _Loaded(*_rows(path))
    ev = loaded.events
    import numpy as np
    times = np.fromiter(map(_g0, ev), np.float64, len(ev)) / 1e6
    span = float(times.max() - times.min()) if len(ev) else 0.0
    if bin_width is None:
        bin_width = _nice_width(span / 300.0)
    nbins = max(2_000, int(span / bin_width) + 2)
    metrics = Metrics(bin_width=bin_width, max_bins=nbins, max_rectangles=max_rectangles,
                      capacity=loaded.capacity, live=False, window=max(5 * bin_width, 1.0))
    metrics.ingest(ev, times)
    metrics.meta = loaded.meta  # type: ignore[attr-defined]
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
    ev = _Loaded(*_rows(path)).events
    df = pd.DataFrame(ev, columns=list(COLUMNS))
    df["timestamp"] = pd.to_datetime(df["time"], unit="us", utc=True)
    df["time"] = df["time"] / 1e6
    return df

