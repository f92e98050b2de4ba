"""Scale on paper: the engine's CPU time and memory per task at 10k, 100k and 1M tasks.

Each size runs in a fresh interpreter: null functions on the thread-pool backend (or on
``NoopExecutionBackend`` when this checkout has one: ``--backend noop``), every task kept
until the end as a user's list keeps them. Per size: wall time, process CPU per task
(``time.process_time``: the event loop, the engine and the pool's threads), and bytes per
task (peak RSS over the baseline, and with ``--tracemalloc`` the Python heap). Then the
growth per decade (should stay ~1.0x) and the projected ceiling of one driver: tasks/s at
100% of one core, 1 / (CPU per task).

    python bench/bench_scale.py [--max 1000000] [--backend auto|threads|noop] [--chunk 10000]
                                [--tracemalloc] [--gc-off]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import subprocess
import sys
import time

SIZES = (10_000, 100_000, 1_000_000)
CHUNK = 10_000  # default tasks built and submitted per call (as a notebook's loop does)


def null():
    return None


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _backend(kind: str):
    if kind in ("auto", "noop"):
        try:
            from rhapsody_lab.backends import NoopExecutionBackend
            return NoopExecutionBackend(), "noop"
        except (ImportError, AttributeError):
            if kind == "noop":
                raise SystemExit("this checkout has no NoopExecutionBackend; use --backend "
                                 "threads") from None
    from concurrent.futures import ThreadPoolExecutor

    from rhapsody_lab.backends import ConcurrentExecutionBackend
    return ConcurrentExecutionBackend(ThreadPoolExecutor(1)), "threads"


async def _measure(n: int, kind: str, trace: bool, chunk: int) -> dict:
    from rhapsody_lab.api import ComputeTask, Session
    backend, used = _backend(kind)
    async with Session([backend]) as session:
        warm = [ComputeTask(function=null) for _ in range(100)]
        await session.submit_tasks(warm)
        await session.wait_tasks(warm)
        gc.collect()
        if trace:
            import tracemalloc
            tracemalloc.start()
        rss0 = _rss_kib("VmRSS")
        c0, t0 = time.process_time(), time.perf_counter()
        tasks: list = []
        for start in range(0, n, chunk):
            part = [ComputeTask(function=null) for _ in range(min(chunk, n - start))]
            tasks.extend(part)
            await session.submit_tasks(part)
        await session.wait_tasks(tasks)
        c1, t1 = time.process_time(), time.perf_counter()
        heap = 0
        if trace:
            import tracemalloc
            heap = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        peak = _rss_kib("VmHWM")
        done = sum(t.state == "DONE" for t in tasks)
    return {"n": n, "backend": used, "done": done, "wall": t1 - t0, "cpu": c1 - c0,
            "rss_bytes": max(0, peak - rss0) * 1024, "heap_bytes": heap}


def _child(n: int, kind: str, trace: bool, chunk: int, gc_off: bool) -> dict:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, __file__, "--one", str(n), "--backend", kind, "--chunk", str(chunk)]
    args += ["--tracemalloc"] if trace else []
    out = subprocess.run(args + (["--gc-off"] if gc_off else []), capture_output=True,
                         text=True, env=env, timeout=600)
    if out.returncode:
        raise SystemExit(f"{n} tasks failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=SIZES[-1], help="largest size (default 1M)")
    ap.add_argument("--backend", default="auto", choices=("auto", "threads", "noop"))
    ap.add_argument("--tracemalloc", action="store_true", help="also the Python heap "
                    "(slower: timings are then not the engine's)")
    ap.add_argument("--chunk", type=int, default=CHUNK, help="tasks per submit_tasks call "
                    "(0: all in one call)")
    ap.add_argument("--gc-off", action="store_true", help="cyclic GC disabled in the "
                    "measured process (how much of the growth is the collector's)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        if args.gc_off:
            gc.disable()
        chunk = args.chunk or args.one
        print(json.dumps(asyncio.run(_measure(args.one, args.backend, args.tracemalloc,
                                              chunk))))
        return 0
    sizes = [n for n in SIZES if n <= args.max] or [args.max]
    rows = []
    print(f"{'tasks':>9}{'backend':>9}{'wall s':>9}{'tasks/s':>10}{'CPU us/task':>13}"
          f"{'RSS B/task':>12}{'heap B/task':>13}")
    for n in sizes:
        r = _child(n, args.backend, args.tracemalloc, args.chunk, args.gc_off)
        assert r["done"] == n, f"only {r['done']} of {n} tasks DONE"
        rows.append(r)
        heap = f"{r['heap_bytes'] / n:>13.0f}" if args.tracemalloc else f"{'-':>13}"
        print(f"{n:>9}{r['backend']:>9}{r['wall']:>9.2f}{n / r['wall']:>10.0f}"
              f"{r['cpu'] / n * 1e6:>13.1f}{r['rss_bytes'] / n:>12.0f}{heap}", flush=True)
    for a, b in itertools.pairwise(rows):
        cpu = (b["cpu"] / b["n"]) / (a["cpu"] / a["n"])
        mem = (b["rss_bytes"] / b["n"]) / max(1.0, a["rss_bytes"] / a["n"])
        print(f"growth {a['n']} -> {b['n']}: CPU/task x{cpu:.2f}, RSS/task x{mem:.2f}")
    last = rows[-1]
    per = last["cpu"] / last["n"]
    print(f"ceiling of one driver: {1 / per:,.0f} tasks/s at 100% of one core "
          f"({per * 1e6:.1f} us CPU per task at {last['n']} tasks); "
          f"memory {last['rss_bytes'] / last['n'] / 1024:.2f} KiB per task kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
