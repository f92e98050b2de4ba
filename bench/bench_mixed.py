"""Mixed workload from one policy session (the flux+dragon experiment, on a laptop-sized share).

The paper runs executables on Flux and functions on Dragon, side by side in one allocation.
Here one policy splits this machine's cores (``--cores``, default: the detected allocation):

- ``exe``: executables (``/bin/sleep D``) on a thread pool (concurrent), half the cores;
  ``--exe-backend flux`` runs them on a Flux instance of that share (the paper's shape:
  ``--exe-backend flux --fn-backend dragon`` under ``dragon -s``);
- ``fn``: Python functions (``time.sleep(D)``) on a Dask LocalCluster (``--fn-backend
  dragon`` under ``dragon -s`` uses Dragon instead), the other half;
- ``llm``: an inference service beside them: the stand-in OpenAI server
  (``tests/inference/fake_openai_server.py``), or real vLLM with ``--vllm`` (needs
  ``~/.cache/rhapsody_lab/vllm-venv``; slow to start on CPU).

Each share first runs its work alone (a session holding only that backend, same share), then
all three together from one session, then alone again (ABA, against drift on a shared
machine). Printed per backend: throughput alone and together and their ratio, utilisation
of the share (tasks x D / (slots x makespan); process start-up counts as overhead), and
overall: makespan together vs the alone makespans run one after another (ideal: the max).

``--scale N`` instead runs N mixed null tasks (70% thread functions, 25% Dask functions,
5% ``/bin/true``; ``--mix`` to change) on a 3-backend policy session in waves of
``--wave`` tasks (at most two waves in flight; a finished wave is dropped), and prints
tasks/s, the driver's peak RSS (``ru_maxrss``) and its RSS after each wave: flat after the
first waves means memory is bounded by the wave size, not by N. (A Dask LocalCluster's
scheduler runs inside the driver, and its client keeps up to 20,000 gathered keys, so
with Dask the driver's RSS also carries the scheduler's bounded logs; ``--second
processes`` puts a process pool in that share instead.) Overlapping big submits give the
session's GC freeze (``rhapsody_lab.api.gcfreeze``) back until the session is idle, so
finished waves stay collectable.

Measured on the 2-core machine (defaults, medians of the ABA runs, 22 Nov 2026):
- the paper's shape, ``dragon -s bench/bench_mixed.py --exe-backend flux --fn-backend dragon
  --d 0.2 --n-exe 100 --n-fn 200 --n-ai 500 --reps 1`` (7 Dec 2026, load 9-18): together vs
  alone exe (Flux) 1.16x, fn (Dragon) 1.01x, ai 1.47x; share utilisation together Flux
  0.78, Dragon 0.997; overall 1.40x the one-after-another throughput, 101% of the ideal
  overlap. Quiet (load ~1, 7 Dec 2026): exe (Flux) 1.01x, fn (Dragon) 1.00x, ai 0.47x;
  utilisation together Flux 0.83 (each job's ~30 ms shell start-up in a 0.2 s task), Dragon
  0.998; overall 1.31x, 100% of the ideal overlap. With D=0.02 s Flux's ~30 ms per job
  start-up caps the exe share at 0.15-0.22.
- under ``dragon -s`` with ``--fn-backend dragon`` (load ~3, 1 rep): together vs alone
  throughput exe 0.96x, fn 0.99x, ai 0.66x; share utilisation together exe 0.84, Dragon
  0.99; overall 1.65x the one-after-another throughput, 99% of the ideal overlap (1.66x).
- Dask LocalCluster for the functions (load 7-10, 2 reps): exe 0.77x, fn 0.83x, ai 0.46x;
  utilisation together 0.56 / 0.71; overall 1.44x, 83% of the ideal overlap (1.73x).
- ``--scale 100000`` (threads + Dask + /bin/true): 1,050-1,080 tasks/s (Dask-bound), peak
  RSS 258-281 MB; ``--scale 200000 --second processes``: ~20,000-23,000 tasks/s, RSS flat
  at ~80-89 MB (peak 90 MB). Before overlapping waves released the GC freeze, RSS grew
  ~21 MB per 25,000-task wave (400 MB after 200,000).

Usage: python bench/bench_mixed.py [--n-exe 200] [--n-fn 400] [--n-ai 3000] [--d 0.02]
       python bench/bench_mixed.py --scale 100000 [--wave 25000]
Benchmarks print ratios measured in the same run; read ratios, not rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from rhapsody_lab.api import AITask, ComputeTask, Session  # noqa: E402
from rhapsody_lab.resources import Allocation  # noqa: E402

FAKE = os.path.join(os.path.dirname(HERE), "tests", "inference", "fake_openai_server.py")


def nap(d: float) -> None:
    time.sleep(d)


def null() -> None:
    return None


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the policy ------------------------------------------------------------------------------
def llm_options(args) -> dict:
    if args.vllm:
        from rhapsody_lab.backends.inference.vllm import default_vllm_python, vllm_home
        if default_vllm_python() is None:
            sys.exit(f"--vllm: no vLLM install in {vllm_home()} (.ci/setup.d/50-vllm.sh)")
        return {"model_name": os.path.join(vllm_home(), "models", "smollm2-135m-hf"),
                "port": 0, "startup_timeout": 900, "max_batch_wait_ms": 5}
    # the stand-in is a ThreadingHTTPServer (listen backlog 5): more connections get reset
    return {"server_command": [sys.executable, FAKE, "--port", "{port}"], "port": 0,
            "startup_timeout": 60, "max_batch_wait_ms": 5, "max_concurrency": 4}


def policy(args, only: str | None = None) -> dict:
    half = max(1, args.cores // 2)
    backends = {
        "exe": {"type": args.exe_backend, "cores": half,
                **({"options": {"test_size": 1}} if args.exe_backend == "flux" else {})},
        "fn": {"type": args.fn_backend, "cores": max(1, args.cores - half),
               **({"options": {"resources": {"silence_logs": 50}}}
                  if args.fn_backend == "dask" else {})},
        "llm": {"type": "vllm", "options": llm_options(args)},
    }
    if only is not None:
        backends = {only: backends[only]}
    rules = [{"kind": k, "backend": b} for k, b in
             (("executable", "exe"), ("function", "fn"), ("ai", "llm")) if b in backends]
    return {"backends": backends, "routing": rules}


def work(args, which: str) -> list:
    if which == "exe":
        return [ComputeTask(executable="/bin/sleep", arguments=[str(args.d)])
                for _ in range(args.n_exe)]
    if which == "fn":
        return [ComputeTask(function=nap, args=(args.d,)) for _ in range(args.n_fn)]
    return [AITask(prompt=f"what is 2+2? ({i})", max_tokens=8, backend="llm")
            for i in range(args.n_ai)]


async def run(args, alloc: Allocation, which: list[str]) -> dict:
    """Makespan of each backend's tasks (from one submit call) and the whole, in seconds."""
    only = which[0] if len(which) == 1 else None
    async with Session.from_policy(policy(args, only), alloc) as s:
        warm = [ComputeTask(function=null)] if "fn" in which else []
        warm += [AITask(prompt="warm up", max_tokens=1, backend="llm")] if "llm" in which \
            else []
        if warm:  # first-call costs (pickling, connections) are not the steady state
            await s.submit_tasks(warm)
            await s.wait_tasks(warm)
        sets = {w: work(args, w) for w in which}
        done: dict[str, float] = {}
        t0 = time.perf_counter()
        await s.submit_tasks([t for w in which for t in sets[w]])

        async def finish(w: str) -> None:
            await s.wait_tasks(sets[w])
            done[w] = time.perf_counter() - t0

        await asyncio.gather(*(finish(w) for w in which))
        total = time.perf_counter() - t0
        slots = {w: s.backends[w].capacity() for w in which}
        bad = {w: sum(t.state != "DONE" for t in sets[w]) for w in which}
        if any(bad.values()):
            print(f"  !! tasks not DONE: {bad}")
    return {"makespan": done, "total": total, "slots": slots,
            "n": {w: len(sets[w]) for w in which}}


async def mixed(args) -> None:
    alloc = Allocation(("localhost",), (args.cores,), (0,), "local")
    names = ["exe", "fn", "llm"]
    print(f"mixed workload on {args.cores} cores, D={args.d}s, exe={args.n_exe} "
          f"({args.exe_backend}) fn={args.n_fn} ({args.fn_backend}) ai={args.n_ai} "
          f"({'vLLM' if args.vllm else 'stand-in server'}); load {load()}")
    alone: dict[str, list[float]] = {w: [] for w in names}
    together: list[dict] = []
    for rep in range(args.reps):
        for w in names:
            r = await run(args, alloc, [w])
            alone[w].append(r["makespan"][w])
        r = await run(args, alloc, names)
        together.append(r)
        for w in reversed(names):
            r2 = await run(args, alloc, [w])
            alone[w].append(r2["makespan"][w])
        print(f"  rep {rep + 1}: together {r['total']:.2f}s  "
              + "  ".join(f"{w} {r['makespan'][w]:.2f}s" for w in names) + f"  load {load()}")
    med = statistics.median
    n = together[0]["n"]
    slots = together[0]["slots"]
    print(f"\n{'backend':8} {'tasks':>6} {'slots':>5} {'alone/s':>9} {'together/s':>11} "
          f"{'ratio':>6} {'util alone':>10} {'util together':>13}")
    for w in names:
        a = med(alone[w])
        t = med([r["makespan"][w] for r in together])
        util = "" if w == "llm" else f"{n[w] * args.d / (slots[w] * a):10.3f} " \
            f"{n[w] * args.d / (slots[w] * t):13.3f}"
        print(f"{w:8} {n[w]:6d} {slots[w]:5d} {n[w] / a:9.1f} {n[w] / t:11.1f} "
              f"{a / t:6.2f}x {util}")
    tot = med([r["total"] for r in together])
    seq = sum(med(alone[w]) for w in names)
    ideal = max(med(alone[w]) for w in names)
    ntot = sum(n.values())
    print(f"{'overall':8} {ntot:6d} {'':5} {ntot / seq:9.1f} {ntot / tot:11.1f} "
          f"{seq / tot:6.2f}x   (alone = one after another; ideal overlap: "
          f"{seq / ideal:.2f}x, reached {ideal / tot:.0%})")
    print(f"driver peak RSS {peak_mb():.0f} MB; load {load()}")


# -- scale -----------------------------------------------------------------------------------
async def scale(args) -> None:
    mix = [float(x) for x in args.mix.split(",")]
    alloc = Allocation(("localhost",), (max(3, args.cores),), (0,), "local")
    pol = {
        "backends": {"threads": {"type": "concurrent", "cores": 1, "priority": 1},
                     "dask": {"type": args.second, "cores": 1,
                              **({"options": {"resources": {"silence_logs": 50}}}
                                 if args.second == "dask" else {})},
                     "exe": {"type": "concurrent", "cores": 1, "limit": 256,
                             "options": {"max_workers": 4}}},
        "routing": [{"kind": "executable", "backend": "exe"},
                    {"tags": "dask", "backend": "dask"}],
        "default": "threads",
    }
    rng_fn, rng_dask = mix[0], mix[0] + mix[1]
    freeze = os.environ.get("RHAPSODY_LAB_GC_FREEZE", "1")
    print(f"scale: RHAPSODY_LAB_GC_FREEZE={freeze}; {args.scale} mixed null tasks "
          f"(threads {mix[0]:.0%}, dask {mix[1]:.0%}, "
          f"/bin/true {mix[2]:.0%}) in waves of {args.wave}; load {load()}")
    base = rss_mb()
    async with Session.from_policy(pol, alloc) as s:
        print(f"  session started: RSS {rss_mb():.0f} MB (before: {base:.0f} MB)")
        t0 = time.perf_counter()
        inflight: list[list] = []
        made = 0
        per_wave = []
        while made < args.scale or inflight:
            if made < args.scale:
                size = min(args.wave, args.scale - made)
                wave = []
                for i in range(made, made + size):
                    x = (i * 0.6180339887) % 1.0  # spread the kinds through the wave
                    if x < rng_fn:
                        wave.append(ComputeTask(function=null))
                    elif x < rng_dask:
                        wave.append(ComputeTask(function=null, tags="dask"))
                    else:
                        wave.append(ComputeTask(executable="/bin/true"))
                made += size
                await s.submit_tasks(wave)
                inflight.append(wave)
            if len(inflight) >= 2 or made >= args.scale:
                first = inflight.pop(0)
                await s.wait_tasks(first)
                bad = sum(t.state != "DONE" for t in first)
                per_wave.append(rss_mb())
                print(f"  wave done at {time.perf_counter() - t0:6.1f}s: RSS {per_wave[-1]:.0f}"
                      f" MB{f', {bad} not DONE' if bad else ''}")
                del first
        elapsed = time.perf_counter() - t0
        stats = s.get_statistics()
        routed = dict(s._router.routed)
    done = stats["counts"].get("DONE", 0)
    print(f"  {done}/{args.scale} DONE in {elapsed:.1f}s: {args.scale / elapsed:.0f} tasks/s "
          f"overall; routed {routed}")
    print(f"  driver peak RSS {peak_mb():.0f} MB; RSS after each wave (MB): "
          f"{[round(x) for x in per_wave]}; load {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=Allocation.detect().cores)
    ap.add_argument("--n-exe", type=int, default=200)
    ap.add_argument("--n-fn", type=int, default=400)
    ap.add_argument("--n-ai", type=int, default=3000)
    ap.add_argument("--d", type=float, default=0.02, help="seconds per exe/fn task")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--fn-backend", default="dask", choices=["dask", "dragon", "concurrent"])
    ap.add_argument("--exe-backend", default="concurrent", choices=["concurrent", "flux"])
    ap.add_argument("--vllm", action="store_true", help="real vLLM instead of the stand-in")
    ap.add_argument("--scale", type=int, default=0, help="run the N-task scale mode")
    ap.add_argument("--wave", type=int, default=25_000)
    ap.add_argument("--mix", default="0.70,0.25,0.05")
    ap.add_argument("--second", default="dask", choices=["dask", "processes"],
                    help="scale mode: the type of the 'dask' share (processes: a process "
                         "pool, no in-driver Dask scheduler)")
    args = ap.parse_args()
    asyncio.run(scale(args) if args.scale else mixed(args))


if __name__ == "__main__":
    main()
