"""Dask backend benchmark: rhapsody_lab vs a raw distributed.Client vs RHAPSODY 0.6.0.

All systems share one LocalCluster (2 worker processes x 1 thread, like the anchors) and
run in the same process, alternating, so the ratios printed at the end are comparable:

- null function tasks (N=10,000): raw ``client.map`` + ``client.gather`` (bulk) vs
  ``Session.submit_tasks`` + ``wait_tasks`` through ``DaskExecutionBackend``;
- ``/bin/true`` x 1,000: raw ``client.map`` of a capturing subprocess.run vs executable tasks;
- RHAPSODY 0.6.0's DaskExecutionBackend on the null tasks, capped by ``--cap`` seconds
  (it is known to take minutes; tasks done per second are reported);
- utilisation of 200 x 50 ms sleeps on the 2 workers (busy time / (slots x makespan)).

Usage: python bench/bench_dask.py [--n 10000] [--n-exec 1000] [--reps 3] [--cap 60]

Measured on the 2-core machine (load ~2, 3 reps, medians): null fn 570/s vs raw 610/s
(0.93x; 0.98x vs raw that also releases its keys), /bin/true 480/s vs 489/s (0.98x),
RHAPSODY 0.6.0 144/s (rhapsody_lab 4.0x), utilisation 0.953 (raw Dask 0.968). Under a
load of ~18 the same run gave 0.89x, 0.95x, 2.3x and 0.955: read ratios, not rates.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time


def noop(*_args):
    return None


def run_true(_i):
    # the same work as an executable task: capture stdout/stderr and the exit code
    p = subprocess.run(["/bin/true"], capture_output=True)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def nap(_i):
    time.sleep(0.05)


def _n_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def raw_rate(client, fn, n) -> float:
    """Bulk map + gather, the futures held: the Dask user's fastest path."""
    t0 = time.perf_counter()
    futs = client.map(fn, range(n), pure=False)
    client.gather(futs)
    dt = time.perf_counter() - t0
    del futs
    while client.run_on_scheduler(_n_tasks):  # start the next run on a clean scheduler
        time.sleep(0.05)
    return n / dt


def raw_rate_released(client, fn, n) -> float:
    """Bulk map + gather, then until the scheduler forgot every key: the same work the
    backend does (it releases each key once its result is in, so workers keep nothing)."""
    t0 = time.perf_counter()
    futs = client.map(fn, range(n), pure=False)
    client.gather(futs)
    del futs
    while client.run_on_scheduler(_n_tasks):
        time.sleep(0.05)
    return n / (time.perf_counter() - t0)


async def lab_rate(address, n: int, executable: bool) -> float:
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import DaskExecutionBackend

    backend = DaskExecutionBackend(cluster=address)
    async with Session(backends=[backend]) as session:
        if executable:
            tasks = [ComputeTask(executable="/bin/true") for _ in range(n)]
        else:
            tasks = [ComputeTask(function=noop) for _ in range(n)]
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        t_sub = time.perf_counter() - t0
        await session.wait_tasks(tasks)
        dt = time.perf_counter() - t0
        bad = sum(t.state != "DONE" for t in tasks)
        if bad:
            raise SystemExit(f"{bad} tasks did not finish DONE")
    print(f"    submit_tasks() returned after {t_sub * 1000:.0f} ms")
    return n / dt


async def lab_utilisation(address, n: int = 200) -> float:
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import DaskExecutionBackend

    backend = DaskExecutionBackend(cluster=address)
    busy = []
    async with Session(backends=[backend]) as session:
        session.subscribe(lambda batch: busy.extend(batch), inline=True)
        tasks = [ComputeTask(function=nap, args=(i,)) for i in range(n)]
        t0 = time.time()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        slots = backend.capacity()
    session.events.flush(limit=None)
    start = {uid: t for t, uid, state, _b, _s in busy if state == "RUNNING"}
    end = {uid: t for t, uid, state, _b, _s in busy if state == "DONE"}
    work = sum(end[u] - start[u] for u in end)
    makespan = max(end.values()) - t0
    return work / (slots * makespan)


def raw_utilisation(client, n: int = 200) -> float:
    slots = sum(client.nthreads().values())
    t0 = time.perf_counter()
    futs = client.map(nap, range(n), pure=False)
    client.gather(futs)
    return n * 0.05 / (slots * (time.perf_counter() - t0))


async def rhapsody_rate(address: str, n: int, cap: float) -> tuple[float, int, float]:
    from distributed import Client
    from rhapsody.api import ComputeTask, Session
    from rhapsody.backends import DaskExecutionBackend

    client = await Client(address, asynchronous=True)
    backend = await DaskExecutionBackend(client=client)
    session = Session(backends=[backend])
    tasks = [ComputeTask(function=noop) for _ in range(n)]
    t0 = time.perf_counter()

    async def run():
        await session.submit_tasks(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        await asyncio.wait_for(run(), cap)
    except asyncio.TimeoutError:
        pass
    dt = time.perf_counter() - t0
    done = sum(t.get("state") == "DONE" for t in tasks)
    try:
        await asyncio.wait_for(session.close(), 30)
    except Exception:
        pass
    try:
        await asyncio.wait_for(client.close(), 10)
    except Exception:
        pass
    return done / dt, done, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n-exec", type=int, default=1_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cap", type=float, default=60.0, help="seconds for RHAPSODY 0.6.0")
    ap.add_argument("--no-rhapsody", action="store_true")
    a = ap.parse_args()

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        client.gather(client.map(noop, range(200), pure=False))  # warm up
        res: dict[str, list[float]] = {k: [] for k in
                                       ("raw_fn", "rel_fn", "lab_fn", "raw_ex", "lab_ex")}
        for rep in range(a.reps):
            print(f"rep {rep + 1}/{a.reps}")
            res["raw_fn"].append(raw_rate(client, noop, a.n))
            print(f"  raw Dask map+gather, null fn : {res['raw_fn'][-1]:8.0f} tasks/s")
            res["rel_fn"].append(raw_rate_released(client, noop, a.n))
            print(f"  raw Dask, keys released      : {res['rel_fn'][-1]:8.0f} tasks/s")
            res["lab_fn"].append(asyncio.run(lab_rate(cluster, a.n, False)))
            print(f"  rhapsody_lab dask, null fn   : {res['lab_fn'][-1]:8.0f} tasks/s")
            res["raw_ex"].append(raw_rate(client, run_true, a.n_exec))
            print(f"  raw Dask map, /bin/true      : {res['raw_ex'][-1]:8.0f} tasks/s")
            res["lab_ex"].append(asyncio.run(lab_rate(cluster, a.n_exec, True)))
            print(f"  rhapsody_lab dask, /bin/true : {res['lab_ex'][-1]:8.0f} tasks/s")
        u_raw = raw_utilisation(client)
        u_lab = asyncio.run(lab_utilisation(cluster))
        rh = None
        if not a.no_rhapsody:
            try:
                import rhapsody  # noqa: F401
                rh = asyncio.run(rhapsody_rate(address, a.n, a.cap))
            except ImportError:
                print("RHAPSODY 0.6.0 not installed (pip install rhapsody-py==0.6.0)")

    med = {k: statistics.median(v) for k, v in res.items()}
    print("\n== medians (tasks/s) and ratios, same run, same LocalCluster (2x1 processes)")
    print(f"null fn  N={a.n}: rhapsody_lab {med['lab_fn']:.0f}/s, raw Dask {med['raw_fn']:.0f}/s"
          f" -> ratio {med['lab_fn'] / med['raw_fn']:.2f}x (target >= 0.9)")
    print(f"  vs raw Dask that also releases its keys ({med['rel_fn']:.0f}/s, the same work):"
          f" ratio {med['lab_fn'] / med['rel_fn']:.2f}x")
    print(f"/bin/true N={a.n_exec}: rhapsody_lab {med['lab_ex']:.0f}/s, raw Dask "
          f"{med['raw_ex']:.0f}/s -> ratio {med['lab_ex'] / med['raw_ex']:.2f}x (target >= 0.9)")
    if rh is not None:
        rate, done, dt = rh
        print(f"RHAPSODY 0.6.0 dask, null fn: {done}/{a.n} done in {dt:.0f}s = {rate:.0f}/s"
              f" -> rhapsody_lab is {med['lab_fn'] / max(rate, 1e-9):.1f}x faster")
    print(f"utilisation 200 x 50 ms on 2 workers: rhapsody_lab {u_lab:.3f}, raw Dask "
          f"{u_raw:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
