"""Flux backend benchmark: rhapsody_lab vs raw flux Python vs the ``flux submit`` CLI.

One Flux instance (``flux start --test-size=1``, flux-core 0.88.0 from
``.ci/setup.d/45-flux.sh``) serves every system, alternating, so the ratio is comparable:

- raw: ``flux.job.submit_async`` of N ``true`` jobs (waitable, all futures at once), each
  reply chained to ``flux.job.wait_async``, in the reactor: the Flux Python user's fastest
  path;
- lab: ``Session.submit_tasks`` + ``wait_tasks`` of N ``true`` executable tasks through a
  ``FluxExecutionBackend`` attached to the same instance (stdout/stderr/exit code kept);
- cli: a plain loop of ``flux submit true`` (``--cli`` jobs; each command is a new Python
  process), for scale.

Both Python paths submit with the same flags (``--validate`` turns the ingest validator on
for both; by default it is off, as the backend does on an instance of its own).

Usage: python bench/bench_flux.py [--n 2000] [--reps 2] [--cli 40] [--validate]

Measured on the 2-core machine, quiet (load ~2.7, the instance's own jobs), 2,000 jobs, 2
alternating reps (7 Dec 2026): raw 29.0 jobs/s, lab 28.3 tasks/s, ratio 0.97x (pairs 1.01x and
0.92x), driver CPU 1.42 ms per task; ``flux submit`` CLI loop 5.3 jobs/s. Both paths slow
down alike as the instance ages (raw 35.7 -> 22.4, lab 35.9 -> 20.7 jobs/s from the first
rep to the second): Flux's own, not the lab path's (the broker's kvs thread took 6-9 ms per
job over 3,000 lab jobs with or without ``waitable`` jobs reaped by ``wait``).
Earlier, under a load of ~14 (other jobs running; medians of
2 alternating reps of 600 jobs): raw 17.9 jobs/s, lab 17.5 tasks/s, ratio 0.98x (pairs
0.92x and 1.06x), the driver's CPU 1.2 ms per task (Flux's broker takes ~30 ms and each
job's shell ~17 ms per job here: Flux's own speed is the limit); ``flux submit`` CLI loop
1.6 jobs/s. Read ratios, not rates: the rates follow the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import FluxExecutionBackend
from rhapsody_lab.backends._flux_broker import ManagedBroker
from rhapsody_lab.backends._flux_env import (
    broker_env,
    find_install,
    import_flux,
    missing_reason,
)


def raw_rate(flux, uri: str, n: int, validate: bool) -> float:
    """submit_async of n ``true`` jobs, each reply chained to ``wait_async``, all in the
    reactor (synchronous waits on thousands of futures abort libev here); jobs/s."""
    from flux.job import JobspecV1
    h = flux.Flux(uri)
    spec = JobspecV1.from_command(["true"])
    spec.cwd = os.getcwd()
    spec.environment = dict(os.environ)
    text = spec.dumps()
    left = [n, 0]  # jobs to finish, failures
    keep = set()

    def waited(fut):
        keep.discard(fut)
        if not fut.get_status().success:
            left[1] += 1
        left[0] -= 1
        if left[0] == 0:
            h.reactor_stop()

    def submitted(fut):
        keep.discard(fut)
        w = flux.job.wait_async(h, fut.get_id())
        keep.add(w)
        w.then(waited)

    t0 = time.perf_counter()
    for _ in range(n):
        fut = flux.job.submit_async(h, text, waitable=True, novalidate=not validate)
        keep.add(fut)
        fut.then(submitted)
    h.reactor_run()
    dt = time.perf_counter() - t0
    if left[1]:
        raise RuntimeError(f"raw: {left[1]} of {n} jobs failed")
    return n / dt


async def lab_rate(uri: str, n: int, validate: bool) -> tuple[float, float]:
    """n ``true`` tasks through the backend; (tasks/s, driver CPU seconds per 1,000)."""
    backend = FluxExecutionBackend(uri=uri, validate=validate)
    async with Session([backend]) as session:
        tasks = [ComputeTask(executable="true") for _ in range(n)]
        c0, t0 = time.process_time(), time.perf_counter()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        bad = sum(t.state != "DONE" for t in tasks)
        if bad:
            raise RuntimeError(f"lab: {bad} of {n} tasks not DONE")
    return n / dt, 1000 * cpu / n


def cli_rate(flux_cmd: str, uri: str, env: dict, n: int) -> float:
    """A loop of ``flux submit true`` (returns once the job is submitted); jobs/s."""
    env = {**env, "FLUX_URI": uri}
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([flux_cmd, "submit", "--quiet", "true"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cli", type=int, default=40)
    ap.add_argument("--validate", action="store_true")
    args = ap.parse_args()
    inst = find_install()
    if inst is None:
        sys.exit(missing_reason())
    flux = import_flux(inst)
    broker = ManagedBroker(inst, 1)
    uri = broker.start()
    try:
        raw_rate(flux, uri, 50, args.validate)  # warm up: the validator, job-exec, caches
        raws, labs, cpus = [], [], []
        for _ in range(args.reps):
            raws.append(raw_rate(flux, uri, args.n, args.validate))
            lab, cpu = asyncio.run(lab_rate(uri, args.n, args.validate))
            labs.append(lab)
            cpus.append(cpu)
            print(f"  raw {raws[-1]:.1f}/s  lab {lab:.1f}/s", flush=True)
        cli = cli_rate(inst.flux, uri, broker_env(inst), args.cli) if args.cli else 0.0
    finally:
        broker.stop()
    raw, lab = statistics.median(raws), statistics.median(labs)
    print(f"flux-core 0.88.0, {args.n} x true, {args.reps} reps (medians), validator "
          f"{'on' if args.validate else 'off'}, load {os.getloadavg()[0]:.1f}")
    print(f"raw flux python (submit_async + wait_async): {raw:.1f} jobs/s")
    print(f"rhapsody_lab FluxExecutionBackend:           {lab:.1f} tasks/s "
          f"(driver CPU {statistics.median(cpus):.2f} ms per task)")
    print(f"ratio lab/raw: {lab / raw:.2f}x")
    if args.cli:
        print(f"flux submit CLI loop ({args.cli} jobs):        {cli:.1f} jobs/s")


if __name__ == "__main__":
    main()
