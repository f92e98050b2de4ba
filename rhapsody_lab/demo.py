"""``make demo``: a small heterogeneous workload on the embedded default backends.

Functions on a thread pool, CPU-bound functions on a process pool, functions and an
executable on a Dask LocalCluster (when the ``dask`` extra is installed), executables, an
``async def`` task and two tasks that fail on purpose, all from one Session; then the
statistics, and a static HTML dashboard report of the session's journal. No cluster and
no GPU needed.
"""

from __future__ import annotations

import asyncio
import os
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


def _optional_dask(out) -> list:
    """A 2-worker Dask LocalCluster backend when the ``dask`` extra is installed."""
    try:
        from .backends.dask import DaskExecutionBackend
    except ImportError as exc:
        print(f"(Dask part skipped: {exc}; pip install 'rhapsody-lab[dask]')", file=out)
        return []
    return [DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1},
                                 name="dask")]


def _optional_journal(session: Session, out):
    try:
        from .observe import attach_journal
        return attach_journal(session)
    except ImportError as exc:
        print(f"(journal and report skipped: {exc}; pip install "
              "'rhapsody-lab[dashboard]')", file=out)
        return None


async def demo(n_functions: int = 200, out=sys.stdout, report: str | None = None,
               work_dir: str | None = None) -> dict:
    threads = ConcurrentExecutionBackend(name="threads")
    processes = ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2),
                                           name="processes")
    backends = [threads, processes, *_optional_dask(out)]
    import tempfile
    work_dir = work_dir or tempfile.mkdtemp(prefix="rhapsody-demo-")
    async with Session(backends, uid="demo", work_dir=work_dir) as session:
        journal = _optional_journal(session, out)
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(n_functions)]
        tasks += [ComputeTask(function=estimate_pi, args=(200_000,), backend="processes")
                  for _ in range(4)]
        tasks += [ComputeTask(function=fetch_like, args=(i,)) for i in range(5)]
        if "dask" in session.backends:
            tasks += [ComputeTask(function=square, args=(i,), backend="dask")
                      for i in range(20)]
            tasks.append(ComputeTask(executable="/bin/hostname", backend="dask"))
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
        print(f"Per backend    : { {k: dict(v) for k, v in stats['backends'].items()} }",
              file=out)
    if journal is not None and report:
        from .dashboard import write_report
        path = getattr(journal, "path", None) or os.path.join(
            work_dir, "demo.journal.jsonl")
        print(f"journal        : {path}", file=out)
        print(f"report         : {write_report(path, report)} (open it in a browser; "
              f"or `rhapsody-lab report {path} -o report.html`)", file=out)
    return stats


def run_demo(n_functions: int = 200, report: str | None = None) -> int:
    """Run the demo; exit code 0 when exactly the two planned failures failed."""
    stats = asyncio.run(demo(n_functions, report=report))
    ok = stats["counts"].get("FAILED", 0) == 2 and stats["counts"].get("DONE", 0) == \
        stats["summary"]["total_tasks"] - 2
    return 0 if ok else 1
