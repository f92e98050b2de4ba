"""The engine's named fast paths (``rhapsody_lab.api.bulk``) against their plain loops.

Each helper and the loop its docstring gives are timed on the same 2,000 fresh tasks, in
alternating repetitions (this machine is shared and noisy), best of each printed with the
ratio loop / helper. A helper gaining < 1.05x belongs back in the plain loop.
Run: .venv/bin/python bench/bench_bulk.py [--n 2000] [--reps 31]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque

from rhapsody_lab.api import ComputeTask, bulk

_ALLOWED = frozenset({"NEW", "SUBMITTED", "QUEUED"})


def _cases(n: int, loop: asyncio.AbstractEventLoop) -> dict:
    def fresh():
        tasks = [ComputeTask(function=print) for _ in range(n)]
        for t in tasks:
            t.bind_future(loop.create_future())
        return tasks

    def plain_take(d, k):
        return [d.popleft() for _ in range(min(len(d), k))]

    def plain_futures(ts):
        fs = [t._future for t in ts]
        return fs if all(type(f) is asyncio.Future and not f.done() for f in fs) else None

    def plain_resolve(fs, ts):
        for f, t in zip(fs, ts, strict=True):
            f.set_result(t)

    return {
        "all_in": (lambda ts: bulk.all_in(ts, _ALLOWED),
                   lambda ts: all(t["state"] in _ALLOWED for t in ts), None),
        "take": (lambda ts: bulk.take(deque(ts), len(ts)),
                 lambda ts: plain_take(deque(ts), len(ts)), None),
        "futures": (bulk.futures, plain_futures, None),
        "resolve": (lambda ts: bulk.resolve([t._future for t in ts], ts),
                    lambda ts: plain_resolve([t._future for t in ts], ts), fresh),
        "_fresh": fresh,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=31)
    args = ap.parse_args()
    loop = asyncio.new_event_loop()
    cases = _cases(args.n, loop)
    fresh = cases.pop("_fresh")
    print(f"api.bulk helpers vs their plain loops, {args.n} tasks, best of {args.reps}")
    print(f"{'helper':<12}{'helper us':>11}{'loop us':>10}{'loop/helper':>13}")
    for name, (fast, plain, make) in cases.items():
        best = {"fast": float("inf"), "plain": float("inf")}
        for _ in range(args.reps):
            for label, fn in (("fast", fast), ("plain", plain)):
                tasks = (make or fresh)()
                t0 = time.perf_counter()
                fn(tasks)
                best[label] = min(best[label], time.perf_counter() - t0)
        print(f"{name:<12}{best['fast'] * 1e6:>11.1f}{best['plain'] * 1e6:>10.1f}"
              f"{best['plain'] / best['fast']:>13.2f}")
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
