"""Code that runs inside process-pool workers: unpickle a function once, call it, time it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

_cache: dict[bytes, Any] = {}


def call_blob(blob: bytes, args: tuple, kwargs: dict) -> tuple[float, float, int, Any]:
    """Call the cloudpickled function ``blob``; return ``(start, end, pid, value)``."""
    fn = _cache.get(blob)
    if fn is None:
        import cloudpickle
        fn = cloudpickle.loads(blob)
        if len(_cache) > 256:
            _cache.clear()
        _cache[blob] = fn
    start = time.time()
    value = fn(*args, **kwargs)
    if asyncio.iscoroutine(value):
        value = asyncio.run(value)
    return start, time.time(), os.getpid(), value
