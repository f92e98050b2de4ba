"""Dask backend benchmark: rhapsody_lab vs a raw distributed.Client vs RHAPSODY 0.6.0.

All systems share a LocalCluster and run in the same process, alternating, so the ratios
printed at the end (of medians over ``--reps``) are comparable:

- null function tasks (``--sizes``, default 2,000 and 10,000) on 2 worker processes x 1
  thread: raw ``client.map`` + ``client.gather`` (bulk) vs ``Session.submit_tasks`` +
  ``wait_tasks`` through ``DaskExecutionBackend`` (small tasks go in chunks,
  ``backends/_dask_chunks.py``); ``--before`` adds the unchunked path (``chunks=False``);
- 100 ms tasks (``--n-long`` 200) on 4 worker processes x 1 thread, the same three ways;
- ``/bin/true`` x ``--n-exec``: raw ``client.map`` of a capturing subprocess.run vs
  executable tasks; utilisation of 200 x 50 ms sleeps on the 2 workers;
- RHAPSODY 0.6.0's DaskExecutionBackend (``pip install 'rhapsody-lab[bench]'``) on
  ``--rh-n`` null tasks and on the 100 ms tasks, capped by ``--cap`` seconds.

Usage: python bench/bench_dask.py [--sizes 2000,10000] [--n-long 200] [--before]
       [--reps 3] [--n-exec 1000] [--rh-n 2000] [--no-rhapsody] [--no-util]

Measured on the shared 2-core machine under a load of 5-24 (raw Dask 60-300 null tasks/s;
read ratios, not rates), with ``--before``, ratios of medians of 3 reps per run: null
N=2,000 lab/raw 22.5x and 31.3x (unchunked 0.70x, 0.80x; two more runs cut by the 115 s
cap gave pairs of 9-63x, unchunked 0.47-1.0x); N=10,000 (1 rep per run) 67x, 74x, 68x
(unchunked 1.03x in a separate run); 100 ms x 200 on 4 workers 0.99x, 1.01x, 0.85x,
1.03x (unchunked 0.99x, 0.99x, 0.83x, 1.02x in the same runs); RHAPSODY 0.6.0 on Dask:
rhapsody_lab 37x and 43x faster on null tasks (N=1,000), 0.89-1.44x (median 1.02x) on
the 100 ms tasks.
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


def nap100(_i):
    time.sleep(0.1)


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


async def lab_rate(address, n: int, executable: bool, chunks: bool = True,
                   fn=noop) -> float:
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import DaskExecutionBackend

    backend = DaskExecutionBackend(cluster=address, chunks=chunks)  # a fresh one: the
    async with Session(backends=[backend]) as session:  # chunk sizes are learnt each run
        if executable:
            tasks = [ComputeTask(executable="/bin/true") for _ in range(n)]
        else:
            tasks = [ComputeTask(function=fn, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        t_sub = time.perf_counter() - t0
        await session.wait_tasks(tasks)
        dt = time.perf_counter() - t0
        bad = sum(t.state != "DONE" for t in tasks)
        if bad:
            raise SystemExit(f"{bad} tasks did not finish DONE")
        feeder = backend._chunks
        sent = f", {feeder.tasks_chunked} in {feeder.chunks_sent} chunks" if feeder else ""
    print(f"    submit_tasks() returned after {t_sub * 1000:.0f} ms{sent}")
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


async def rhapsody_rate(address: str, n: int, cap: float,
                        fn=noop) -> tuple[float, int, float]:
    from distributed import Client
    from rhapsody.api import ComputeTask, Session
    from rhapsody.backends import DaskExecutionBackend

    client = await Client(address, asynchronous=True)
    backend = await DaskExecutionBackend(client=client)
    session = Session(backends=[backend])
    tasks = [ComputeTask(function=fn, args=(i,)) for i in range(n)]
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


def _rate(label: str, value: float, res: dict, key: str) -> None:
    res.setdefault(key, []).append(value)
    raw = res.get("raw" + key[3:]) if key[:3] in ("lab", "pre") else None
    vs = f"  ({value / raw[-1]:.2f}x this rep's raw)" if raw else ""
    print(f"  {label:34s}: {value:8.1f} tasks/s{vs}", flush=True)


def _ratio(res: dict, num: str, den: str) -> str:
    if not res.get(num) or not res.get(den):
        return "n/a"
    return f"{statistics.median(res[num]) / statistics.median(res[den]):.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,10000", help="null-task counts, e.g. 2000,10000")
    ap.add_argument("--n-exec", type=int, default=1_000, help="/bin/true tasks (0: skip)")
    ap.add_argument("--n-long", type=int, default=200, help="100 ms tasks on 4 workers")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--before", action="store_true",
                    help="also run rhapsody_lab with chunks=False (the unchunked path)")
    ap.add_argument("--rh-n", type=int, default=2_000, help="null tasks for RHAPSODY 0.6.0")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds for RHAPSODY 0.6.0")
    ap.add_argument("--no-rhapsody", action="store_true")
    ap.add_argument("--no-util", action="store_true", help="skip the utilisation run")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x]

    from distributed import Client, LocalCluster

    try:
        import rhapsody  # noqa: F401
        have_rh = not a.no_rhapsody
    except ImportError:
        have_rh = False
        if not a.no_rhapsody:
            print("RHAPSODY 0.6.0 not installed (pip install 'rhapsody-lab[bench]')")
    res: dict[str, list[float]] = {}
    u_raw = u_lab = None
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        client.gather(client.map(noop, range(200), pure=False))  # warm up (workers import
        asyncio.run(lab_rate(cluster, 200, False, chunks=False))  # rhapsody_lab's wrappers)
        for rep in range(a.reps):
            print(f"rep {rep + 1}/{a.reps} (2 workers x 1 thread)")
            for n in sizes:
                _rate(f"raw Dask map+gather, null N={n}", raw_rate(client, noop, n), res,
                      f"raw{n}")
                _rate(f"rhapsody_lab, null N={n}", asyncio.run(lab_rate(cluster, n, False)),
                      res, f"lab{n}")
                if a.before:
                    _rate(f"rhapsody_lab unchunked, N={n}",
                          asyncio.run(lab_rate(cluster, n, False, chunks=False)), res,
                          f"pre{n}")
            if a.n_exec:
                _rate("raw Dask map, /bin/true", raw_rate(client, run_true, a.n_exec), res,
                      "raw_ex")
                _rate("rhapsody_lab, /bin/true",
                      asyncio.run(lab_rate(cluster, a.n_exec, True)), res, "lab_ex")
        if not a.no_util:
            u_raw = raw_utilisation(client)
            u_lab = asyncio.run(lab_utilisation(cluster))
        if have_rh and a.rh_n:
            rate, done, dt = asyncio.run(rhapsody_rate(address, a.rh_n, a.cap))
            print(f"  RHAPSODY 0.6.0 dask, null N={a.rh_n}: {done} done in {dt:.1f}s")
            res["rh_null"] = [rate]
    if a.n_long:  # 100 ms tasks on a second cluster
        with LocalCluster(n_workers=4, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            address = cluster.scheduler_address
            client.gather(client.map(noop, range(40), pure=False))
            asyncio.run(lab_rate(cluster, 40, False, chunks=False))
            for rep in range(a.reps):
                print(f"rep {rep + 1}/{a.reps} (4 workers x 1 thread, 100 ms tasks)")
                _rate(f"raw Dask map+gather, 100 ms x {a.n_long}",
                      raw_rate(client, nap100, a.n_long), res, "raw_long")
                _rate("rhapsody_lab, 100 ms",
                      asyncio.run(lab_rate(cluster, a.n_long, False, fn=nap100)), res, "lab_long")
                if a.before:
                    _rate("rhapsody_lab unchunked, 100 ms",
                          asyncio.run(lab_rate(cluster, a.n_long, False, chunks=False,
                                               fn=nap100)), res, "pre_long")
            if have_rh:
                rate, done, dt = asyncio.run(rhapsody_rate(address, a.n_long, a.cap, fn=nap100))
                print(f"  RHAPSODY 0.6.0 dask, 100 ms x {a.n_long}: {done} done in {dt:.1f}s")
                res["rh_long"] = [rate]

    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n== medians of {a.reps} reps, ratios of rates measured in this run")
    for n in sizes:
        line = (f"null N={n:<6} rhapsody_lab {med[f'lab{n}']:6.0f}/s  raw client.map "
                f"{med[f'raw{n}']:5.0f}/s  lab/raw {_ratio(res, f'lab{n}', f'raw{n}')}"
                f" (goal >= 3x)")
        if a.before:
            line += f"  unchunked/raw {_ratio(res, f'pre{n}', f'raw{n}')}"
        print(line)
    if a.n_long:
        line = (f"100 ms x {a.n_long} on 4 workers: lab/raw {_ratio(res, 'lab_long', 'raw_long')}"
                f" (goal >= 0.95x)")
        if a.before:
            line += f"  unchunked/raw {_ratio(res, 'pre_long', 'raw_long')}"
        print(line)
    if a.n_exec:
        print(f"/bin/true x {a.n_exec}: lab/raw {_ratio(res, 'lab_ex', 'raw_ex')}")
    n0 = sizes[0] if sizes else None
    if "rh_null" in res and n0 is not None:
        print(f"RHAPSODY 0.6.0 on Dask, null N={a.rh_n}: {med['rh_null']:.0f}/s -> "
              f"rhapsody_lab (N={n0}) / RHAPSODY {_ratio(res, f'lab{n0}', 'rh_null')}")
    if "rh_long" in res:
        print(f"RHAPSODY 0.6.0 on Dask, 100 ms: {med['rh_long']:.1f}/s -> rhapsody_lab / "
              f"RHAPSODY {_ratio(res, 'lab_long', 'rh_long')}")
    if u_lab is not None:
        print(f"utilisation 200 x 50 ms on 2 workers: rhapsody_lab {u_lab:.3f}, raw Dask "
              f"{u_raw:.3f}")


if __name__ == "__main__":
    main()
