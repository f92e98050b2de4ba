"""Engine overhead: tasks/s on NoopExecutionBackend (nothing runs), ours vs RHAPSODY 0.6.0's.

Both backends complete every task without running it, so the rate is what the session,
the task life cycle and the futures cost. Each system runs in a fresh interpreter,
repetitions interleaved, medians reported as a ratio (the machine is shared and noisy).
RHAPSODY's row needs ``pip install -e ".[bench]"`` (rhapsody-py 0.6.0); without it the
row says so.

    python bench/bench_noop.py [--reps 3] [--n 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench_concurrent import _median
from bench_concurrent import _one as run_one


def noop():
    return None


async def _run(session_cls, task_cls, backend, n: int) -> dict:
    session = session_cls(backends=[backend])
    tasks = [task_cls(function=noop) for _ in range(n)]
    t0 = time.perf_counter()
    futures = await session.submit_tasks(tasks)
    t1 = time.perf_counter()
    await asyncio.gather(*futures)
    t2 = time.perf_counter()
    assert all(t["state"] == "DONE" for t in tasks)
    await session.close()
    return {"rate": n / (t2 - t0), "submit_fraction": (t1 - t0) / (t2 - t0)}


def m_lab_noop(n: int) -> dict:
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends.execution import NoopExecutionBackend

    async def go() -> dict:
        return await _run(Session, ComputeTask, await NoopExecutionBackend(), n)
    return asyncio.run(go())


def m_rhapsody_noop(n: int) -> dict:
    try:
        from rhapsody.api import ComputeTask, Session
        from rhapsody.backends.execution import NoopExecutionBackend
    except ImportError as exc:
        return {"error": f"rhapsody-py not installed ({exc}); pip install -e '.[bench]'"}

    async def go() -> dict:
        return await _run(Session, ComputeTask, await NoopExecutionBackend(), n)
    return asyncio.run(go())


def m_lab_threads(n: int) -> dict:
    """The same null functions really run on 2 threads: what running them adds."""
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import ConcurrentExecutionBackend

    async def go() -> dict:
        return await _run(Session, ComputeTask, ConcurrentExecutionBackend(max_workers=2), n)
    return asyncio.run(go())


def _one(name: str, n: int) -> dict:
    return run_one(name, n, __file__, timeout=300)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="N=5000, one repetition")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(globals()[f"m_{args.one}"](args.n)))
        return 0
    n = 5_000 if args.quick else args.n
    reps = 1 if args.quick else args.reps
    names = ("lab_noop", "rhapsody_noop", "lab_threads")
    res: dict[str, list[dict]] = {k: [] for k in names}
    for rep in range(reps):
        for name in names:
            r = _one(name, n)
            res[name].append(r)
            print(f"  rep {rep + 1} {name}: {r}", file=sys.stderr)
    lab, rh, thr = (_median(res[k], "rate") for k in names)
    missing = next((r["error"] for r in res["rhapsody_noop"] if "error" in r), "")
    rows = [
        ("null tasks, noop backend: rhapsody_lab vs RHAPSODY 0.6.0", lab / rh,
         f"{lab:,.0f}/s vs {rh:,.0f}/s" + (f" ({missing})" if missing else "")),
        ("  submit_tasks(N) time / time until all done (ours)",
         _median(res["lab_noop"], "submit_fraction"), ""),
        ("null fns on 2 threads vs the noop backend (ours)", thr / lab,
         f"{thr:,.0f}/s vs {lab:,.0f}/s"),
    ]
    print(f"\nNoop backend (engine overhead), N={n}, {reps} repetition(s), medians")
    print(f"{'figure':58} {'value':>9}  detail")
    for label, value, detail in rows:
        print(f"{label:58} {value:9.2f}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
