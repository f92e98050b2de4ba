"""Null function tasks through DragonExecutionBackendV3 vs raw Dragon, in one Dragon run.

    .venv/bin/python bench/bench_dragon.py [--n 5000] [--reps 15] [--no-rhapsody]

Started with plain python it launches itself under ``dragon -s`` (timing the runtime's
start-up and teardown from outside) and prints the measurements as ratios to the raw
Dragon ``multiprocessing`` Pool measured in the same run. RHAPSODY 0.6.0's Dragon backend
(``pip install rhapsody-py==0.6.0``) runs too when it imports; it is built on Dragon's
``Batch`` (~2 tasks/s here), so it gets a smaller N and a deadline, and says so.
``BENCH_SETTLE=0.5`` sleeps that long before each timed run.

Each rep starts a fresh raw Pool, warms it, lets it sit idle for 0.3 s (as a pool does
between cells of a notebook), times one map ("after idle": the headline baseline) and a
second map right after it ("hot"), and closes it before our rep runs. Why: an idle Dragon
Pool keeps polling its queues (measured here: 12.5% of a core in the driver, 10-15% in
each worker), so a pool alive beside ours took a third of a core of this 2-core machine
from whichever side ran, and a pool that has just mapped answers its next map from
spinning workers (up to ~1M null tasks/s here) while one that sat idle answers from
sleeping ones (~100-400k). Both baselines are printed. ``--shared-raw-pool`` keeps one
raw Pool alive through the run instead (the older, noisier comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time

_IDLE = 0.3  # seconds a raw Pool sits idle before its timed map, and after it closes


def noop(x=None):
    return None


def out(kind: str, **fields) -> None:
    print(json.dumps({"bench": kind, "t": time.time(), **fields}), flush=True)


# -- inside the Dragon runtime ---------------------------------------------------------
def raw_map(pool, n: int) -> float:
    t = time.time()
    pool.map(noop, range(n))
    return time.time() - t


def raw_maps(n: int, workers: int, idle: float) -> tuple[float, float]:
    """A fresh raw Pool: warm it, let it sit ``idle`` seconds, then time two maps of ``n``
    back to back (the first after idle, the second hot); close it (see the docstring)."""
    import multiprocessing as mp
    pool = mp.get_context("dragon").Pool(workers)
    try:
        pool.map(noop, range(100))
        time.sleep(idle)
        return raw_map(pool, n), raw_map(pool, n)
    finally:
        pool.close()
        pool.join()


def raw_pool_extras(n: int, workers: int) -> None:
    import multiprocessing as mp
    t0 = time.time()
    pool = mp.get_context("dragon").Pool(workers)
    pool.apply_async(noop).get()
    out("raw_pool_start", seconds=time.time() - t0)
    for _ in range(3):
        t = time.time()
        rs = [pool.apply_async(noop, (i,)) for i in range(min(n, 1000))]
        for r in rs:
            r.get()
        out("raw_pool_apply_async", n=len(rs), seconds=time.time() - t)
    t = time.time()
    pool.close()
    pool.join()
    out("raw_pool_close", seconds=time.time() - t)


async def direct(backend, n: int) -> float:
    """The backend alone (no Session): submit_tasks until every task is finished."""
    from rhapsody_lab.api import ComputeTask
    tasks = [ComputeTask(function=noop) for _ in range(n)]
    left = [n]
    done = asyncio.Event()

    def on_state(task, state):
        if state == "DONE":
            left[0] -= 1
            if not left[0]:
                done.set()
    backend._callbacks[:] = [on_state]
    t = time.time()
    await backend.submit_tasks(tasks)
    await done.wait()
    dt = time.time() - t
    backend._callbacks[:] = []
    return dt


async def ours_vs_raw(n: int, reps: int, workers: int, shared_raw: bool) -> None:
    """Alternate raw map and the backend, rep by rep, so load changes hit both alike."""
    import multiprocessing as mp

    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import DragonExecutionBackendV3
    t0 = time.time()
    backend = await DragonExecutionBackendV3(num_workers=workers)
    out("ours_start", seconds=time.time() - t0)
    raw = mp.get_context("dragon").Pool(workers) if shared_raw else None
    if raw is not None:
        raw.map(noop, range(100))
    async with Session(backends=[backend]) as s:
        warm = [ComputeTask(function=noop) for _ in range(100)]
        await s.submit_tasks(warm)
        await s.wait_tasks(warm)
        settle = float(os.environ.get("BENCH_SETTLE", "0"))
        for _ in range(reps):
            await asyncio.sleep(settle)
            if raw is not None:
                out("raw_pool_map", n=n, seconds=await asyncio.to_thread(raw_map, raw, n))
            else:
                idle, hot = await asyncio.to_thread(raw_maps, n, workers, _IDLE)
                out("raw_pool_map", n=n, seconds=idle)
                out("raw_pool_map_hot", n=n, seconds=hot)
                await asyncio.sleep(_IDLE)  # the closed pool's teardown ends off our clock
            tasks = [ComputeTask(function=noop) for _ in range(n)]
            await asyncio.sleep(settle)
            t = time.time()
            await s.submit_tasks(tasks)
            t_sub = time.time() - t
            await s.wait_tasks(tasks)
            dt = time.time() - t
            assert all(x.state == "DONE" for x in tasks)
            out("ours", n=n, seconds=dt, submit_seconds=t_sub)
            await asyncio.sleep(settle)
            out("ours_direct", n=n, seconds=await direct(backend, n))
        # one task in flight at a time (the agentic-loop case)
        lat = []
        for _ in range(200):
            task = ComputeTask(function=noop)
            t = time.time()
            await s.submit_tasks([task])
            await task
            lat.append(time.time() - t)
        out("ours_roundtrip", median_ms=1000 * statistics.median(lat))
        if raw is not None:
            raw.close()
            raw.join()
        t = time.time()
    out("ours_close", seconds=time.time() - t)


async def theirs(n: int, deadline: float) -> None:
    try:
        import logging
        logging.disable(logging.WARNING)
        from rhapsody.api import ComputeTask, Session
        try:
            from rhapsody.backends import DragonExecutionBackendV3 as Theirs
        except ImportError:
            from rhapsody.backends.execution.dragon import DragonExecutionBackend as Theirs
    except Exception as exc:  # not installed / does not import here
        out("rhapsody_skip", reason=f"{type(exc).__name__}: {exc}")
        return
    try:
        t0 = time.time()
        backend = await Theirs()
        out("rhapsody_start", seconds=time.time() - t0)
        session = Session(backends=[backend])
        tasks = [ComputeTask(function=noop) for _ in range(n)]
        t = time.time()
        futs = await session.submit_tasks(tasks)
        done, _pending = await asyncio.wait(futs, timeout=deadline)
        dt = time.time() - t
        out("rhapsody", n=n, done=len(done), seconds=dt)
        t = time.time()
        try:
            await asyncio.wait_for(session.close(), 60)
        except Exception as exc:
            out("rhapsody_close_error", reason=repr(exc))
        out("rhapsody_close", seconds=time.time() - t)
    except Exception as exc:
        out("rhapsody_skip", reason=f"{type(exc).__name__}: {exc}")


def inner(args: argparse.Namespace) -> None:
    out("inner_ready")
    import dragon  # noqa: F401  (registers the "dragon" start method)
    if args.part == "rhapsody":
        asyncio.run(theirs(args.rhapsody_n, args.rhapsody_deadline))
    else:
        raw_pool_extras(args.n, args.workers)
        asyncio.run(ours_vs_raw(args.n, args.reps, args.workers, args.shared_raw_pool))
    out("inner_end")


# -- outside: launch, time the runtime, report --------------------------------------------
def outer(args: argparse.Namespace) -> None:
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
               DRAGON_DEFAULT_SEG_SZ=str(512 * 1024 * 1024),
               DRAGON_INF_SEG_SZ=str(256 * 1024 * 1024))
    here = os.path.dirname(os.path.abspath(__file__))
    # this checkout first; a PYTHONPATH given (e.g. where rhapsody-py is unpacked) after it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (os.path.dirname(here),
                                                      os.environ.get("PYTHONPATH"))))
    cmd = [os.path.join(bindir, "dragon"), "-s", os.path.abspath(__file__)]

    def launch(part: str, timeout: float) -> tuple[dict, float, float]:
        # dragon's own option parser would take the script's --options: use the env
        env["RHAPSODY_BENCH_INNER"] = json.dumps({**vars(args), "part": part})
        t_launch = time.time()
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd="/tmp") as p:
            try:
                stdout, stderr = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)  # Dragon tears its runtime down on ^C
                try:
                    stdout, stderr = p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    stdout, stderr = p.communicate()
        t_exit = time.time()
        rec: dict[str, list] = {}
        for line in stdout.splitlines():
            if line.startswith('{"bench"'):
                d = json.loads(line)
                rec.setdefault(d["bench"], []).append(d)
        if "inner_end" not in rec and part == "ours":
            print(stdout[-4000:], stderr[-4000:], sep="\n")
            raise SystemExit(f"the Dragon run failed (rc {p.returncode})")
        return rec, t_launch, t_exit

    rec, t_launch, t_exit = launch("ours", 900)
    if args.rhapsody:  # its own runtime: a hang there must not cost our figures
        theirs_rec, _, _ = launch("rhapsody", args.rhapsody_deadline + 120)
        rec.update({k: v for k, v in theirs_rec.items() if k.startswith("rhapsody")})
        if "rhapsody" not in theirs_rec and "rhapsody_skip" not in theirs_rec:
            rec["rhapsody_skip"] = [{"reason": "its Dragon run did not report in time"}]

    def rate(kind: str) -> float:
        return statistics.median(d["n"] / d["seconds"] for d in rec[kind])

    n = args.n
    raw_map, raw_apply, mine = rate("raw_pool_map"), rate("raw_pool_apply_async"), rate("ours")
    print(f"Dragon null function tasks, N={n}, {args.workers} workers, median of "
          f"{args.reps} (same run; raw Pool "
          f"{'shared by all reps' if args.shared_raw_pool else 'fresh each rep'})")
    print(f"  raw Dragon mp.Pool.map           {raw_map:10.0f} tasks/s   1.00x"
          + ("" if args.shared_raw_pool else "  (its first map after 0.3 s idle)"))
    print(f"  raw Dragon mp.Pool.apply_async   {raw_apply:10.0f} tasks/s   "
          f"{raw_apply / raw_map:.3f}x  (N=1000, one call per task)")
    sub = statistics.median(d["submit_seconds"] for d in rec["ours"])
    pair = statistics.median(r["n"] / r["seconds"] / (m["n"] / m["seconds"])
                             for r, m in zip(rec["ours"], rec["raw_pool_map"], strict=True))
    print(f"  rhapsody_lab DragonExecutionBackendV3 {mine:5.0f} tasks/s   "
          f"{mine / raw_map:.3f}x of map (median of per-rep ratios {pair:.3f}x), "
          f"{mine / raw_apply:.1f}x of apply_async; "
          f"submit_tasks returned in {sub:.3f} s")
    if "raw_pool_map_hot" in rec:
        hot = rate("raw_pool_map_hot")
        pair_h = statistics.median(r["n"] / r["seconds"] / (m["n"] / m["seconds"]) for r, m
                                   in zip(rec["ours"], rec["raw_pool_map_hot"], strict=True))
        print(f"  raw Dragon mp.Pool.map, hot      {hot:10.0f} tasks/s   "
              f"(a second map right after the first); ours {mine / hot:.3f}x of it "
              f"(median of per-rep ratios {pair_h:.3f}x)")
    d = rate("ours_direct")
    pair_d = statistics.median(r["n"] / r["seconds"] / (m["n"] / m["seconds"]) for r, m in
                               zip(rec["ours_direct"], rec["raw_pool_map"], strict=True))
    print(f"  the backend alone (no Session)   {d:10.0f} tasks/s   {d / raw_map:.3f}x "
          f"(median of per-rep ratios {pair_d:.3f}x)")
    for kind, label in (("raw_pool_map", "raw map"), ("raw_pool_map_hot", "raw hot"),
                        ("ours", "ours")):
        if kind not in rec:
            continue
        rates = sorted(d["n"] / d["seconds"] for d in rec[kind])
        q1, q3 = rates[len(rates) // 4], rates[(3 * len(rates)) // 4]
        print(f"  spread of {label:7s} tasks/s: min {rates[0]:8.0f}  quartiles {q1:8.0f} "
              f"{q3:8.0f}  max {rates[-1]:8.0f}  (max/min {rates[-1] / rates[0]:.1f})")
    print("  per rep (raw map, ours) tasks/s: " + ", ".join(
        f"({m['n'] / m['seconds']:.0f}, {r['n'] / r['seconds']:.0f})"
        for r, m in zip(rec["ours"], rec["raw_pool_map"], strict=True)))
    print(f"  rhapsody_lab one task in flight: {rec['ours_roundtrip'][0]['median_ms']:.2f} ms "
          "round trip (median of 200)")
    if "rhapsody" in rec:
        r = rec["rhapsody"][0]
        rr = r["done"] / r["seconds"]
        print(f"  RHAPSODY 0.6.0 DragonExecutionBackendV3 (Batch) {rr:8.1f} tasks/s   "
              f"{rr / raw_map:.5f}x of map; ours/theirs = {mine / rr:.0f}x  "
              f"({r['done']}/{r['n']} done in {r['seconds']:.1f} s)")
        if "rhapsody_start" in rec:
            print(f"    its start-up {rec['rhapsody_start'][0]['seconds']:.2f} s, close "
                  f"{rec.get('rhapsody_close', [{'seconds': float('nan')}])[0]['seconds']:.2f} s")
    elif "rhapsody_skip" in rec:
        print(f"  RHAPSODY 0.6.0: skipped ({rec['rhapsody_skip'][0]['reason'][:200]})")
    ready = rec["inner_ready"][0]["t"] - t_launch
    teardown = t_exit - rec["inner_end"][0]["t"]
    print(f"Start-up: `dragon -s` to script running {ready:.2f} s; raw pool "
          f"{rec['raw_pool_start'][0]['seconds']:.2f} s; backend (await) "
          f"{rec['ours_start'][0]['seconds']:.2f} s")
    print(f"Shutdown: backend/session close {rec['ours_close'][0]['seconds']:.2f} s; raw pool "
          f"close {rec['raw_pool_close'][0]['seconds']:.2f} s; runtime teardown after the "
          f"script {teardown:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shared-raw-pool", action="store_true",
                    help="one raw Pool alive through the run (see the docstring)")
    ap.add_argument("--no-rhapsody", dest="rhapsody", action="store_false")
    ap.add_argument("--rhapsody-n", type=int, default=60)
    ap.add_argument("--rhapsody-deadline", type=float, default=120.0)
    inner_args = os.environ.pop("RHAPSODY_BENCH_INNER", None)
    if inner_args is not None:
        inner(argparse.Namespace(**json.loads(inner_args)))
        return
    args = ap.parse_args()
    outer(args)


if __name__ == "__main__":
    main()
