"""Cancel or start, never both: a gate in each Dask worker process between the two.

The driver cannot tell from Dask whether a task's function has started: the scheduler's
``processing`` also lists what a worker has queued next, and cancelling a future whose
function runs only makes Dask drop its result (the thread goes on). So the task wrapper
passes this gate before it calls the function, and ``cancel_task`` asks every worker, at
the gate, to *refuse* the task: a worker that already let it through answers with its
start time (the cancel then returns False and the task runs to its end); the others keep
the refusal, so the task never starts anywhere. The answer is exact because both sides
take the same lock in the process that would run the task.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

__all__ = ["claim", "enter", "leave"]

_KEEP_STARTED = 120.0   # s a start stays known after its end (its result is on its way)
_KEEP_REFUSED = 3600.0  # s a refusal is kept on workers that never got the task

_lock = threading.Lock()
_started: dict[str, float] = {}           # uid -> start, in this process
_ended: deque[tuple[float, str]] = deque()  # (end, uid), oldest first: to forget starts
_refused: dict[str, float] = {}           # uid -> when a cancel claimed it


# -- in the worker: the task wrappers ----------------------------------------------------
def enter(uid: str) -> float | None:
    """Before a task runs: its start time, or None if it was canceled (do not run it)."""
    with _lock:
        if _refused.pop(uid, None) is not None:
            return None
        now = time.time()
        while _ended and _ended[0][0] < now - _KEEP_STARTED:
            _started.pop(_ended.popleft()[1], None)
        _started[uid] = now
        return now


def leave(uid: str) -> None:
    """After a task ran (a cancel from now on finds it started: its result is coming)."""
    with _lock:
        _ended.append((time.time(), uid))


def _refuse(uids: list[str]) -> dict[str, float | None]:
    """Run on each worker (``Client.run``): each uid's start there, or None once refused."""
    out: dict[str, float | None] = {}
    with _lock:
        now = time.time()
        for uid, when in list(_refused.items()):
            if when < now - _KEEP_REFUSED:
                del _refused[uid]
        for uid in uids:
            t0 = _started.get(uid)
            if t0 is None:
                _refused[uid] = now
            out[uid] = t0
    return out


def _unrefuse(uids: list[str]) -> None:
    with _lock:
        for uid in uids:
            _refused.pop(uid, None)


# -- in the driver -------------------------------------------------------------------------
def claim(client: Any, uid: str) -> tuple[float, str] | None:
    """Stop ``uid`` from starting on any worker of ``client``; blocking (run it off the loop).

    Returns None when no worker had started it (it never will), else ``(start, worker)``
    (the refusals are withdrawn: if that worker dies, Dask's rerun elsewhere may run).
    A worker that fails to answer is taken as gone: Dask reruns its tasks on the others,
    which refuse this one.
    """
    answers = client.run(_refuse, [uid], on_error="return")
    started = sorted((a[uid], addr) for addr, a in answers.items()
                     if isinstance(a, dict) and a.get(uid) is not None)
    if not started:
        return None
    client.run(_unrefuse, [uid], on_error="ignore")
    return started[0]
