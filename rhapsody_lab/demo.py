"""``make demo``: a small heterogeneous workload on the embedded default backends.

Functions on a thread pool, CPU-bound functions on a process pool, executables, an
``async def`` task and a task that fails on purpose, all from one Session; then the
statistics. No cluster and no GPU needed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from .api import ComputeTask, Session
from .backends.concurrent import ConcurrentExecutionBackend
from .progress import TerminalProgress


def estimate_pi(n: int) -> float:
    """Monte-Carlo estimate of pi from ``n`` samples (CPU-bound: runs in a process)."""
    import random
    hits = sum(1 for _ in range(n) if random.random() ** 2 + random.random() ** 2 < 1.0)
    return 4.0 * hits / n


def square(x: int) -> int:
    return x * x


async def fetch_like(x: int) -> str:
    """An ``async def`` task: runs on its own event loop inside the worker."""
    await asyncio.sleep(0.01)
    return f"async-{x}"


def fails_on_purpose() -> None:
    raise ValueError("this task fails on purpose; the others are unaffected")


async def demo(n_functions: int = 200, out=sys.stdout) -> dict:
    threads = ConcurrentExecutionBackend(name="threads")
    processes = ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2),
                                           name="processes")
    async with Session([threads, processes], uid="demo") as session:
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(n_functions)]
        tasks += [ComputeTask(function=estimate_pi, args=(200_000,), backend="processes")
                  for _ in range(4)]
        tasks += [ComputeTask(function=fetch_like, args=(i,)) for i in range(5)]
        tasks += [ComputeTask(executable="/bin/echo", arguments=["hello from", str(i)])
                  for i in range(10)]
        tasks += [ComputeTask(executable="/bin/sh",
                              arguments=["-c", "echo 'simulated solver error' >&2; exit 3"]),
                  ComputeTask(function=fails_on_purpose)]
        bar = TerminalProgress(len(tasks), stream=out)
        session.subscribe(bar, inline=True)
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        elapsed = time.perf_counter() - t0
        stats = session.get_statistics()
        pis = [t.return_value for t in tasks if t.function is estimate_pi]
        print(f"\n{len(tasks)} tasks in {elapsed:.2f}s on backends "
              f"{list(session.backends)}", file=out)
        print(f"pi estimates (processes): {', '.join(f'{p:.4f}' for p in pis)}", file=out)
        echo = next(t for t in tasks if t.executable == "/bin/echo")
        print(f"an executable: {echo.uid} stdout={echo.stdout.strip()!r} "
              f"exit_code={echo.exit_code}", file=out)
        for t in tasks:
            if t.state != "DONE":
                why = type(t.exception).__name__ if t.exception else ""
                print(f"handled failure: {t.uid} {t.state} exit_code={t.exit_code} {why}: "
                      f"{(t.stderr or '').strip().splitlines()[-1:]}", file=out)
        s = stats["summary"]
        print("=== Session statistics ===", file=out)
        print(f"Total tasks    : {s['total_tasks']}", file=out)
        print(f"State counts   : {dict(stats['counts'])}", file=out)
        print(f"Avg total time : {s['avg_total']:.4f}s", file=out)
        print(f"Avg queue time : {s['avg_queue']:.4f}s", file=out)
        print(f"Avg exec time  : {s['avg_execution']:.4f}s", file=out)
        print(f"Throughput     : {stats['throughput']['overall']:.0f} tasks/s", file=out)
        return stats


def run_demo(n_functions: int = 200) -> int:
    """Run the demo; exit code 0 when exactly the two planned failures failed."""
    stats = asyncio.run(demo(n_functions))
    ok = stats["counts"].get("FAILED", 0) == 2 and stats["counts"].get("DONE", 0) == \
        stats["summary"]["total_tasks"] - 2
    return 0 if ok else 1
