"""What observing costs: null-task throughput with the journal and a live dashboard attached
vs without (one run, interleaved repetitions, medians), the dashboard's update interval
during a 100,000-task run, and how long a 100,000-task journal takes to load.

Targets (issue 6): ratio >= 0.9, update interval <= 500 ms, load < 5 s. "Observed" means
journal + metrics (observer process) + the notebook widget refreshing every 0.5 s (its
default) + one Bokeh server app open; the 100,000-task run refreshes every 0.25 s.
The wall-clock ratio swings with other load on the machine; the kernel's CPU time per
task (all its threads) is printed beside it as the steadier figure.
Run: .venv/bin/python bench/bench_observe.py [--tasks 50000] [--reps 7] [--big 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
import urllib.request

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend


def noop():
    return None


async def _observed(session: Session, interval: float):
    """Journal + metrics (observer process) + notebook widget + one server app open."""
    from rhapsody_lab import dashboard
    from rhapsody_lab.observe import attach_journal, attach_metrics
    journal = attach_journal(session)
    metrics = attach_metrics(session)
    widget = dashboard.show(session, interval=interval)
    ticks: list[float] = []
    durations: list[float] = []
    step = widget._step

    def timed_step() -> None:
        began = time.perf_counter()
        ticks.append(began)
        step()
        durations.append(time.perf_counter() - began)

    widget._step = timed_step  # record when each refresh ran
    server = dashboard.serve(session, interval=interval, plots=["task-stream"])
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: urllib.request.urlopen(server.urls["task-stream"], timeout=30).read())
    return journal, metrics, widget, server, ticks, durations


async def _run(n: int, observe: bool, interval: float = 0.25) -> dict:
    work = tempfile.mkdtemp(prefix="bench-observe-")
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=work) as s:
        extra = None
        if observe:
            extra = await _observed(s, interval)
            await asyncio.sleep(1.0)  # observer process started, plots built
        tasks = [ComputeTask(function=noop) for _ in range(n)]
        c0 = time.process_time()
        t0 = time.perf_counter()
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
        t1 = time.perf_counter()
        out = {"rate": n / (t1 - t0), "seconds": t1 - t0,
               "cpu_us": (time.process_time() - c0) / n * 1e6}
        if extra is not None:
            journal, metrics, widget, server, ticks, durations = extra
            during = [b - a for a, b in itertools.pairwise(ticks)
                      if t0 <= a and b <= t1 + interval]
            out["max_gap"] = max(during) if during else float("nan")
            out["mean_gap"] = statistics.mean(during) if during else float("nan")
            out["update_ms"] = (statistics.median(durations) * 1000 if durations
                                else float("nan"), max(durations, default=0.0) * 1000)
            # how far behind the plots were when the last task finished
            s.events.drain(120)
            metrics.sync()
            out["lag"] = time.perf_counter() - t1
            out["done_seen"] = metrics.counts().get("DONE", 0)
            widget.stop()
            server.stop()
            out["journal"] = journal.path
    if extra is not None:
        extra[0].close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=50_000, help="tasks per throughput run")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--big", type=int, default=100_000, help="tasks of the dashboard run")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    plain, observed, cpu_plain, cpu_obs = [], [], [], []
    for _ in range(args.reps):  # interleaved, so background load hits both alike
        a = asyncio.run(_run(args.tasks, False))
        b = asyncio.run(_run(args.tasks, True, interval=0.5))  # the default refresh
        plain.append(a["rate"])
        observed.append(b["rate"])
        cpu_plain.append(a["cpu_us"])
        cpu_obs.append(b["cpu_us"])
    p, o = statistics.median(plain), statistics.median(observed)
    ratio = o / p
    print(f"null tasks, N={args.tasks}, {args.reps} reps (median tasks/s): "
          f"plain {p:,.0f}  observed {o:,.0f}  ratio {ratio:.2f} "
          f"[{'ok' if ratio >= 0.9 else 'BELOW'} target 0.9]")
    print(f"  plain runs {[round(x) for x in plain]}, observed runs "
          f"{[round(x) for x in observed]}")
    cp, co = statistics.median(cpu_plain), statistics.median(cpu_obs)
    print(f"  kernel CPU per task (all its threads; load-robust): plain {cp:.1f} us, "
          f"observed {co:.1f} us (+{co - cp:.1f} us, ratio {cp / co:.2f})")

    big = asyncio.run(_run(args.big, True, interval=0.25))  # headroom under 500 ms
    print(f"dashboard during a {args.big:,}-task run: {big['rate']:,.0f} tasks/s; update "
          f"interval max {big['max_gap'] * 1000:.0f} ms, mean {big['mean_gap'] * 1000:.0f} ms "
          f"[{'ok' if big['max_gap'] <= 0.5 else 'ABOVE'} target 500 ms] (one refresh "
          f"takes {big['update_ms'][0]:.0f} ms median, {big['update_ms'][1]:.0f} ms max); "
          "plots caught up "
          f"{big['lag']:.2f} s after the last task ({big['done_seen']:,} DONE seen)")

    from rhapsody_lab.observe import load
    t0 = time.perf_counter()
    m = load(big["journal"])
    took = time.perf_counter() - t0
    size = os.path.getsize(big["journal"]) / 1e6
    print(f"load journal of {m.total_tasks:,} tasks ({size:.1f} MB): {took:.2f} s "
          f"[{'ok' if took < 5 else 'ABOVE'} target 5 s]")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
