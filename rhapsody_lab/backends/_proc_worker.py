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


def call_batch(items: list[tuple[bytes, tuple, dict]]) -> tuple[int, list[Outcome]]:
    """Run ``(cloudpickled function, args, kwargs)`` items; return ``(pid, outcomes)``."""
    out: list[Outcome] = []
    for blob, args, kwargs in items:
        start = time.time()
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
    return os.getpid(), out
