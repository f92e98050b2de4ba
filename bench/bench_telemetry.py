"""What telemetry costs: null-task throughput with ``start_telemetry()`` vs without (one
run, interleaved repetitions, medians), and how long after the last task the telemetry had
folded every event in (spans, metrics: ``sync()``).

Telemetry runs on its own thread and yields the GIL to the event loop while batches keep
arriving, so dispatch keeps its pace and the telemetry catches up after the run. The
wall-clock ratio swings with other load on the machine; the event loop thread's CPU time
per task (the dispatch work itself) and the kernel's (all threads) are printed beside it.
Run: .venv/bin/python bench/bench_telemetry.py [--tasks 20000] [--reps 5] [--checkpoint]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--checkpoint", action="store_true", help="also write the JSONL file")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    plain, tele = [], []
    for _ in range(args.reps):  # interleaved, so background load hits both alike
        plain.append(asyncio.run(_run(args.tasks, False, False)))
        tele.append(asyncio.run(_run(args.tasks, True, args.checkpoint)))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
