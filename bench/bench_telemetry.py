"""What telemetry costs: null-task throughput with ``start_telemetry()`` vs without (one
run, interleaved repetitions, medians), and how long after the last task the telemetry had
folded every event in (spans, metrics: ``sync()``).

Telemetry runs on its own thread and yields the GIL to the event loop while batches keep
arriving, so dispatch keeps its pace and the telemetry catches up after the run. The
wall-clock ratio swings with other load on the machine; the event loop thread's CPU time
per task (the dispatch work itself) and the kernel's (all threads) are printed beside it.
RHAPSODY 0.6.0 (``rhapsody-py``, the ``bench`` extra) runs the same null tasks on its own
ConcurrentExecutionBackend (a 2-thread pool) with and without its ``start_telemetry()``, in
the same interleaving; the lab-with-telemetry / RHAPSODY-with-telemetry ratio is printed.
Run: .venv/bin/python bench/bench_telemetry.py [--tasks 20000] [--reps 5] [--checkpoint]
[--rhapsody-tasks N (default: --tasks; 0 skips RHAPSODY)]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend


def noop():
    return None


async def _run(n: int, telemetry: bool, checkpoint: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as work:
        return await _run_in(work, n, telemetry, checkpoint)


async def _run_in(work: str, n: int, telemetry: bool, checkpoint: bool) -> dict:
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=work) as s:
        tm = None
        if telemetry:
            tm = await s.start_telemetry(checkpoint_path=work if checkpoint else None)
        await asyncio.sleep(0.5)  # both alike; the resource poller's first reading is done
        tasks = [ComputeTask(function=noop) for _ in range(n)]
        c0, l0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
        t1 = time.perf_counter()
        out = {"rate": n / (t1 - t0), "cpu_us": (time.process_time() - c0) / n * 1e6,
               "loop_us": (time.thread_time() - l0) / n * 1e6}
        if tm is not None:
            tm.sync()
            out["lag"] = time.perf_counter() - t1
            out["cpu_all_us"] = (time.process_time() - c0) / n * 1e6
            counts = tm.task_count()
            assert counts["completed"] == n, counts
            assert len(tm.read_traces()) == n  # the session span ends at close
    return out


async def _run_rhapsody(n: int, telemetry: bool) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import rhapsody
    from rhapsody.backends import ConcurrentExecutionBackend as RhConcurrent
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-rh-") as work:
        backend = await RhConcurrent(ThreadPoolExecutor(max_workers=2))
        async with rhapsody.Session([backend], work_dir=work) as s:
            tm = await s.start_telemetry() if telemetry else None
            await asyncio.sleep(0.5)
            tasks = [rhapsody.ComputeTask(function=noop) for _ in range(n)]
            t0 = time.perf_counter()
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
            out = {"rate": n / (time.perf_counter() - t0)}
            if tm is not None:  # its telemetry dispatches on the loop: how far it had got
                out["seen"] = tm.task_count().get("completed", 0)
    return out


def _rhapsody_available() -> str | None:
    try:
        from importlib.metadata import version
        return version("rhapsody-py")
    except Exception:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--checkpoint", action="store_true", help="also write the JSONL file")
    ap.add_argument("--rhapsody-tasks", type=int, default=None)
    args = ap.parse_args()
    rh_n = args.tasks if args.rhapsody_tasks is None else args.rhapsody_tasks
    rh_version = _rhapsody_available() if rh_n > 0 else None
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    plain, tele, rh_plain, rh_tele = [], [], [], []
    for _ in range(args.reps):  # interleaved, so background load hits all alike
        plain.append(asyncio.run(_run(args.tasks, False, False)))
        tele.append(asyncio.run(_run(args.tasks, True, args.checkpoint)))
        if rh_version:
            rh_plain.append(asyncio.run(_run_rhapsody(rh_n, False)))
            rh_tele.append(asyncio.run(_run_rhapsody(rh_n, True)))
    p = statistics.median(r["rate"] for r in plain)
    t = statistics.median(r["rate"] for r in tele)
    ratio = t / p
    print(f"null tasks, N={args.tasks}, {args.reps} reps (median tasks/s): plain {p:,.0f}  "
          f"telemetry{' + checkpoint' if args.checkpoint else ''} {t:,.0f}  "
          f"ratio {ratio:.2f} [{'ok' if ratio >= 0.9 else 'BELOW'} target 0.9]")
    print(f"  plain runs {[round(r['rate']) for r in plain]}, telemetry runs "
          f"{[round(r['rate']) for r in tele]}")
    cp = statistics.median(r["cpu_us"] for r in plain)
    ct = statistics.median(r["cpu_us"] for r in tele)
    ca = statistics.median(r["cpu_all_us"] for r in tele)
    lag = statistics.median(r["lag"] for r in tele)
    print(f"  kernel CPU per task during the run: plain {cp:.1f} us, telemetry {ct:.1f} us; "
          f"including the catch-up: {ca:.1f} us")
    lp = statistics.median(r["loop_us"] for r in plain)
    lt = statistics.median(r["loop_us"] for r in tele)
    print(f"  event-loop thread CPU per task: plain {lp:.1f} us, telemetry {lt:.1f} us "
          f"(ratio {lp / lt:.2f})")
    print(f"  telemetry caught up {lag:.2f} s after the last task (median)")
    if not rh_version:
        print("RHAPSODY: not measured (pip install rhapsody-py==0.6.0, the bench extra)"
              if rh_n > 0 else "RHAPSODY: skipped (--rhapsody-tasks 0)")
        return 0
    rp = statistics.median(r["rate"] for r in rh_plain)
    rt = statistics.median(r["rate"] for r in rh_tele)
    print(f"RHAPSODY {rh_version}, same null tasks, N={rh_n}: plain {rp:,.0f}  telemetry "
          f"{rt:,.0f}  ratio {rt / rp:.2f}")
    print(f"  runs plain {[round(r['rate']) for r in rh_plain]}, telemetry "
          f"{[round(r['rate']) for r in rh_tele]}; its telemetry had counted "
          f"{[r['seen'] for r in rh_tele]} completed of {rh_n} when the last task ended")
    print(f"lab with telemetry / RHAPSODY with telemetry: {t / rt:.2f}x "
          f"(without telemetry: {p / rp:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
