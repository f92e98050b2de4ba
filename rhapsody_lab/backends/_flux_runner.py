"""Runs one function task inside a Flux job: ``python _flux_runner.py IN OUT``.

``IN`` holds two pickles: the driver's ``sys.path`` (so functions pickled by reference
import here as they did there), then ``cloudpickle.dumps((function, args, kwargs))``.
Rank 0 writes ``OUT`` (via a temporary file, then renamed): ``("ok", value)`` or
``("err", exception or None, traceback text)``, and exits 0 or 1. A standalone script:
it imports nothing of rhapsody_lab, so any checkout or install runs it the same.
"""

from __future__ import annotations

import os
import sys

# this script's directory (rhapsody_lab/backends) is first on sys.path: its modules would
# shadow the standard library's (``concurrent``), so it goes before anything is imported
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import pickle
import traceback


def _run(fin: str) -> tuple:
    with open(fin, "rb") as f:
        paths = pickle.load(f)
        sys.path[:0] = [p for p in paths if p not in sys.path]
        fn, args, kwargs = pickle.load(f)
    value = fn(*args, **kwargs)
    if hasattr(value, "__await__"):
        import asyncio

        async def wait() -> object:
            return await value
        value = asyncio.run(wait())
    return ("ok", value)


def main(fin: str, fout: str) -> int:
    try:
        result = _run(fin)
    except BaseException as exc:  # a function may raise anything, SystemExit included
        result = ("err", exc, traceback.format_exc())
    if os.environ.get("FLUX_TASK_RANK", "0") != "0":
        return 0 if result[0] == "ok" else 1
    try:
        data = pickle.dumps(result)
    except Exception as exc:  # an unpicklable value or exception
        what = "return value" if result[0] == "ok" else "exception"
        text = result[2] if result[0] == "err" else ""
        data = pickle.dumps(("err", None, f"{text}the function's {what} cannot be pickled "
                             f"back to the driver: {exc!r}"))
        result = ("err",)
    tmp = fout + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, fout)
    return 0 if result[0] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
