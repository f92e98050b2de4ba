"""Code that runs inside Dragon processes: pool chunks (native mode) and process ranks.

Only the standard library and cloudpickle are imported here, so pool workers and task
processes start fast. Results cross process boundaries pickled; a value the standard
pickle refuses travels cloudpickled (``_Cloud``), and one nothing can pickle becomes a
failure that says so.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import sys
import time
import traceback
from array import array
from typing import Any

#: Marks the line a function rank writes its pickled outcome on (after its own output).
RESULT_MARK = "\x1eRHAPSODY_LAB_RESULT:"

_SIMPLE = (type(None), bool, int, float, str, bytes)
_fns: dict[tuple, Any] = {}


class _Cloud:
    """A value that only cloudpickle can carry."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes):
        self.blob = blob


def restore(value: Any) -> Any:
    """Undo ``_portable`` on the driver side."""
    if type(value) is _Cloud:
        import cloudpickle
        return cloudpickle.loads(value.blob)
    return value


def _portable(value: Any) -> Any:
    if type(value) in _SIMPLE:
        return value
    try:
        pickle.dumps(value)
        return value
    except Exception:
        import cloudpickle
        return _Cloud(cloudpickle.dumps(value))  # raises if nothing can carry it


def _portable_exc(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _load(token: str, fid: int, blob: bytes) -> Any:
    fn = _fns.get((token, fid))
    if fn is None:
        import cloudpickle
        fn = cloudpickle.loads(blob)
        if len(_fns) > 512:
            _fns.clear()
        _fns[(token, fid)] = fn
    return fn


def _call(fn: Any, args: tuple, kwargs: dict) -> Any:
    value = fn(*args, **kwargs)
    if asyncio.iscoroutine(value):
        value = asyncio.run(value)
    return value


def worker_main(index: int, taskq: Any, resultq: Any, startq: Any) -> None:
    """A native-mode worker process: run the chunks of ``taskq`` until it gives None.

    Says on ``startq`` that it is up (chunk 0) and which chunk it starts, when, so the
    driver can tell which chunk a dead worker held and show its first task RUNNING; puts
    ``(chunk, (pid, outcomes))`` on ``resultq``, or ``(chunk, None, reason)`` when the
    outcomes cannot be sent.
    """
    import socket
    host, pid = socket.gethostname(), os.getpid()
    startq.put((0, index, pid, host, time.time()))
    get, put, started = taskq.get, resultq.put, startq.put
    while True:
        msg = get()
        if msg is None:
            return
        cid, token, blobs, items = msg
        started((cid, index, pid, host, time.time()))
        try:
            put((cid, run_chunk(token, blobs, items)))
        except BaseException as exc:  # e.g. a pickling error on the way back
            try:
                put((cid, None, f"the pool worker could not send its outcomes: "
                                f"{type(exc).__name__}: {exc}"))
            except BaseException:
                pass
            if not isinstance(exc, Exception):
                raise


def run_chunk(token: str, blobs: dict, items: list) -> tuple[int, Any]:
    """Run ``items`` ``[(fid, args, kwargs), ...]`` in this worker process.

    Returns ``(pid, outcomes)``: ``outcomes`` is ``[(ok, start, end, value_or_exception,
    traceback_text), ...]``, or, when every task returned None, ``(starts, ends)`` as the
    bytes of two ``array("d")`` (a null chunk crosses back in two small buffers).
    """
    starts: list[float] = []
    ends: list[float] = []
    other: dict[int, tuple] = {}  # index -> (ok, value, traceback): not a plain None
    begin, end = starts.append, ends.append
    clock = time.time
    fid_now, fn = None, None
    for i, (fid, args, kwargs) in enumerate(items):
        t0 = clock()
        begin(t0)
        try:
            if fid != fid_now:  # a chunk is mostly one function: look it up once
                fn = _load(token, fid, blobs[fid])
                fid_now = fid
            value = fn(*args, **kwargs)
            if value is None:  # the common case needs no conversion
                end(clock())
                continue
            if asyncio.iscoroutine(value):
                value = asyncio.run(value)
            other[i] = (True, _portable(value), None)
        except BaseException as exc:
            other[i] = (False, _portable_exc(exc), "".join(traceback.format_exception(exc)))
        end(clock())
    if not other:
        return os.getpid(), (array("d", starts).tobytes(), array("d", ends).tobytes())
    none = (True, None, None)
    return os.getpid(), [(ok, t0, t1, value, tb) for (ok, value, tb), t0, t1 in zip(
        (other.get(i, none) for i in range(len(starts))), starts, ends, strict=True)]


def process_main(blob: bytes, args: tuple, kwargs: dict) -> None:
    """Entry point of one function rank: run it, print the outcome line, exit 0/1."""
    import cloudpickle
    try:
        value = _call(cloudpickle.loads(blob), args, kwargs)
        payload = (True, _portable(value), None)
        code = 0
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc))
        sys.stderr.write(tb)
        payload = (False, _portable_exc(exc), tb)
        code = 1
    try:
        data = cloudpickle.dumps(payload)
    except Exception as exc:
        data = cloudpickle.dumps((False, RuntimeError(f"result cannot be pickled: {exc}"),
                                  None))
        code = 1
    sys.stderr.flush()
    sys.stdout.write("\n" + RESULT_MARK + base64.b64encode(data).decode() + "\n")
    sys.stdout.flush()
    sys.exit(code)


def parse_rank_output(text: str) -> tuple[str, tuple | None]:
    """Split a function rank's stdout into (its own output, outcome or None)."""
    i = text.rfind("\n" + RESULT_MARK)
    if i < 0:
        return text, None
    line = text[i + 1 + len(RESULT_MARK):].split("\n", 1)[0]
    try:
        import cloudpickle
        return text[:i], cloudpickle.loads(base64.b64decode(line))
    except Exception:
        return text[:i], None
