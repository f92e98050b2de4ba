"""The observer process: folds a session's events into Metrics and writes its journal.

Started by ``rhapsody_lab.observe.process.ObserverProcess`` as
``python -m rhapsody_lab.observe._child IN_FD OUT_FD SIDE_FD OPTIONS_JSON``. Frames on
IN_FD are ``b"E" + marshal((capacity, items))`` (events, and runs of them) or
``b"R" + pickle((method, args))``, handled in order (such a request sees every event
sent before it; replies on OUT_FD). Items become columns once (``observe.columns``), which
the journal writes and the metrics fold at once: the stream's batching is the one buffer.
SIDE_FD (a socket) carries dashboard reads, answered at once by another thread. End of input
(the session closed, or the kernel died) folds and writes what is left, then exits.
"""

from __future__ import annotations

import json
import marshal
import pickle
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from .columns import columns
from .journal import Journal
from .metrics import Metrics


class _Observer:
    def __init__(self, options: dict[str, Any]):
        self.metrics = Metrics(**options)
        self.journals: dict[str, Journal] = {}

    # requests ------------------------------------------------------------------------
    def open_journal(self, path: str, session_uid: str, capacity: dict, fsync: bool) -> str:
        if path not in self.journals:
            self.journals[path] = Journal(path, session_uid=session_uid, capacity=capacity,
                                          fsync=fsync)
        return path

    def close_journal(self, path: str) -> int:
        j = self.journals.pop(path, None)
        if j is None:
            return 0
        j.close()
        return j.events_written

    def write_resources(self, path: str, rows: list) -> None:
        j = self.journals.get(path)
        if j is not None:
            j.write_resources(rows)

    def attr(self, name: str) -> Any:
        value = getattr(self.metrics, name)
        return list(value) if isinstance(value, list) else value

    def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.metrics, name)(*args)
        return None if result is self.metrics else result

    def bundle(self, requests: list) -> list:
        """Several ``("call"|"attr", name, args)`` reads in one round trip."""
        return [getattr(self, kind)(name, *args) for kind, name, args in requests]

    # events --------------------------------------------------------------------------
    def events(self, capacity: dict, items: list) -> None:
        if capacity:
            self.metrics.capacity.update(capacity)
        cols = columns(items)
        for j in list(self.journals.values()):
            j.write_columns(cols)
        self.metrics.fold_columns(cols)

    def close(self) -> None:
        self.metrics.close()
        for j in self.journals.values():
            j.close()


def _reply(conn: Connection, observer: _Observer, frame: bytes) -> bool:
    method, args = pickle.loads(frame)
    try:
        reply = (True, getattr(observer, method)(*args))
    except Exception as exc:  # the caller raises it as a SessionError
        reply = (False, str(exc))
    try:
        conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        return False
    return True


def _serve_readers(conn: Connection, observer: _Observer) -> None:
    """Out-of-band reads (dashboards): answered at once, not behind queued events."""
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not _reply(conn, observer, frame):
            return


def main(argv: list[str]) -> int:
    inp = Connection(int(argv[0]), writable=False)
    out = Connection(int(argv[1]), readable=False)
    side = Connection(int(argv[2]))
    observer = _Observer(json.loads(argv[3]))
    threading.Thread(target=_serve_readers, args=(side, observer), daemon=True).start()
    # No nice(): a lowered thread preempted while it holds this process's GIL would
    # stall the dashboard reader behind it (priority inversion) on a busy machine.
    try:
        while True:
            try:
                frame = inp.recv_bytes()
            except (EOFError, OSError):
                break
            kind = frame[:1]
            if kind == b"E":
                capacity, items = marshal.loads(frame[1:])
                observer.events(capacity, items)
            elif kind == b"R" and not _reply(out, observer, frame[1:]):
                break
    finally:
        observer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
