"""Code that runs inside process-pool workers: call a batch of tasks, never lose one.

Each task's outcome is pickled here, one by one, so an unpicklable return value or
exception fails only its own task (the pool would otherwise fail the whole batch).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
import traceback
from typing import Any

from ._pool_starts import monitor

_cache: dict[bytes, Any] = {}

#: one outcome: (ok, start, end, pickled value | (pickled exception or None, traceback text))
Outcome = tuple[bool, float, float, Any]


def _function(blob: bytes) -> Any:
    fn = _cache.get(blob)
    if fn is None:
        import cloudpickle
        fn = cloudpickle.loads(blob)
        if len(_cache) > 256:
            _cache.clear()
        _cache[blob] = fn
    return fn


def call_batch(items: list[tuple[bytes, tuple, dict]], uids: list[str] | None = None,
               starts: str | None = None) -> tuple[int, list[Outcome]]:
    """Run ``(cloudpickled function, args, kwargs)`` items; return ``(pid, outcomes)``.

    With ``starts`` (a ``_pool_starts.StartListener`` address) a task that runs long is
    announced to the driver while it runs (``_pool_starts.Monitor``).
    """
    mon = monitor(starts) if uids is not None else None
    if mon is not None:
        mon.begin()
    try:
        return os.getpid(), _call_all(items, uids, mon)
    finally:
        if mon is not None:
            mon.end()


def _call_all(items: list[tuple[bytes, tuple, dict]], uids: list[str] | None,
              mon: object) -> list[Outcome]:
    out: list[Outcome] = []
    for i, (blob, args, kwargs) in enumerate(items):
        start = time.time()
        if mon is not None:
            mon.current = (uids[i], start)  # type: ignore[attr-defined]
        try:
            value = _function(blob)(*args, **kwargs)
            if asyncio.iscoroutine(value):
                value = asyncio.run(value)
            end = time.time()
            try:
                out.append((True, start, end, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)))
            except Exception as exc:
                raise TypeError(f"the task's return value ({type(value).__name__}) cannot be "
                                f"pickled back to the driver: {exc}") from exc
        except BaseException as exc:
            end = time.time()
            text = "".join(traceback.format_exception(exc))
            try:
                payload = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
                pickle.loads(payload)
            except Exception:
                payload = None
            out.append((False, start, end, (payload, text)))
    return out
