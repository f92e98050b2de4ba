"""Benchmark of the vLLM inference backend against a direct async OpenAI-compatible client.

One vLLM CPU server (SmolLM2-135M, started through the backend as a managed service) serves
every run. The same N short prompts (temperature 0, so both sides generate the same tokens)
are sent (a) directly with an async aiohttp client, ``concurrency`` requests in flight, and
(b) through a Session and an attached ``VllmInferenceBackend`` with ``max_concurrency`` set to
the same value, with the default batching (1024 tasks / 500 ms) (and ``--wait0``:
``max_batch_wait_ms=0``). Runs alternate ABBA over ``--reps`` repetitions; medians, paired
and pooled ratios of the same run are printed, with the client CPU per request (the part of
the overhead that does not depend on the machine's load). The added latency per request is
measured one request at a time (the agentic-loop case) and as the mean completion time
within the burst.

    python bench/bench_inference.py [--n 256] [--concurrency 64] [--reps 6] [--wait0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time

import aiohttp

from rhapsody_lab.api import AITask, Session
from rhapsody_lab.backends.inference.vllm import (
    VllmInferenceBackend,
    default_vllm_python,
    vllm_home,
)

SUBJECTS = ["cats", "rivers", "stars", "bread", "music", "rain", "trees", "ships"]


def cpu() -> float:
    """CPU seconds used by this (client) process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def prompts(n: int) -> list[str]:
    return [f"Write one short sentence about {SUBJECTS[i % len(SUBJECTS)]} number {i}."
            for i in range(n)]


async def direct(endpoint: str, model: str, items: list[str], concurrency: int,
                 max_tokens: int) -> dict:
    """The baseline: an async OpenAI-compatible client, ``concurrency`` in flight."""
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    tokens = 0
    done_at: list[float] = []
    async with aiohttp.ClientSession(connector=conn) as http:
        async def one(p: str) -> None:
            nonlocal tokens
            async with sem:
                body = {"model": model, "messages": [{"role": "user", "content": p}],
                        "temperature": 0.0, "max_tokens": max_tokens}
                async with http.post(f"{endpoint}/chat/completions", json=body) as r:
                    data = json.loads(await r.read())
                    assert r.status == 200, data
            tokens += data["usage"]["completion_tokens"]
            done_at.append(time.perf_counter())

        c0, t0 = cpu(), time.perf_counter()
        await asyncio.gather(*(one(p) for p in items))
        wall, c1 = time.perf_counter() - t0, cpu()
    return {"wall": wall, "tokens": tokens, "tok_s": tokens / wall,
            "cpu_ms": 1000 * (c1 - c0) / len(items),
            "mean_latency": statistics.fmean(t - t0 for t in done_at)}


async def through_backend(endpoint: str, items: list[str], concurrency: int,
                          max_tokens: int, wait_ms: float) -> dict:
    b = VllmInferenceBackend(endpoint=endpoint, max_concurrency=concurrency,
                             max_batch_wait_ms=wait_ms)
    async with Session([b]) as s:
        tasks = [AITask(prompt=p, temperature=0.0, max_tokens=max_tokens, backend=b.name)
                 for p in items]
        done_at: list[float] = []
        c0, t0 = cpu(), time.perf_counter()
        futs = await s.submit_tasks(tasks)
        for f in futs:
            f.add_done_callback(lambda _f: done_at.append(time.perf_counter()))
        await s.wait_tasks(tasks)
        wall, c1 = time.perf_counter() - t0, cpu()
        bad = [t for t in tasks if t.state != "DONE"]
        assert not bad, bad[0].stderr
        tokens = sum(t.usage["completion_tokens"] for t in tasks)
    return {"wall": wall, "tokens": tokens, "tok_s": tokens / wall,
            "cpu_ms": 1000 * (c1 - c0) / len(items),
            "mean_latency": statistics.fmean(t - t0 for t in done_at)}


async def round_trips(endpoint: str, model: str, k: int, max_tokens: int) -> dict:
    """One request in flight, interleaved per prompt: direct, backend with wait 0, backend
    with the default 500 ms window; median seconds of each."""
    out: dict[str, list[float]] = {"direct": [], "backend_wait0": [], "backend_default": []}
    wait0 = VllmInferenceBackend(endpoint=endpoint, max_batch_wait_ms=0, name="wait0")
    default = VllmInferenceBackend(endpoint=endpoint, name="default")
    async with Session([wait0, default]) as s, aiohttp.ClientSession() as http:
        for p in prompts(k):
            body = {"model": model, "messages": [{"role": "user", "content": p}],
                    "temperature": 0.0, "max_tokens": max_tokens}
            t0 = time.perf_counter()
            async with http.post(f"{endpoint}/chat/completions", json=body) as r:
                await r.read()
            out["direct"].append(time.perf_counter() - t0)
            for label, b in (("backend_wait0", wait0), ("backend_default", default)):
                t = AITask(prompt=p, temperature=0.0, max_tokens=max_tokens, backend=b.name)
                t0 = time.perf_counter()
                await s.submit_tasks([t])
                await t
                out[label].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in out.items()}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--wait0", action="store_true",
                    help="also measure the backend with max_batch_wait_ms=0")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--round-trips", type=int, default=15)
    ap.add_argument("--endpoint", help="attach to this server instead of starting one")
    ap.add_argument("--model", default=os.path.join(vllm_home(), "models", "smollm2-135m-hf"))
    a = ap.parse_args()

    server = None
    if a.endpoint:
        endpoint = a.endpoint.rstrip("/")
        probe = await VllmInferenceBackend(endpoint=endpoint)
        model = probe.served_model_name
        await probe.shutdown()
    else:
        if default_vllm_python() is None or not os.path.isdir(a.model):
            sys.exit("vLLM venv or model missing: run .ci/setup.d/50-vllm.sh")
        t0 = time.perf_counter()
        server = await VllmInferenceBackend(model_name=a.model, port=0, name="server")
        endpoint, model = server.endpoint, server.served_model_name
        print(f"vLLM server ready in {time.perf_counter() - t0:.1f}s at {endpoint}")
    try:
        items = prompts(a.n)
        await direct(endpoint, model, items[:16], a.concurrency, a.max_tokens)  # warm-up
        labels = ["direct", "backend_default"] + (["backend_wait0"] if a.wait0 else [])
        runs: dict[str, list[dict]] = {k: [] for k in labels}
        for rep in range(a.reps):
            order = labels if rep % 2 == 0 else list(reversed(labels))  # ABBA: drift cancels
            for label in order:
                if label == "direct":
                    r = await direct(endpoint, model, items, a.concurrency, a.max_tokens)
                else:
                    wait = 500 if label == "backend_default" else 0
                    r = await through_backend(endpoint, items, a.concurrency, a.max_tokens,
                                              wait)
                runs[label].append(r)
                print(f"  rep {rep} {label:16s} {r['tok_s']:7.1f} tok/s  wall {r['wall']:.2f}s"
                      f"  tokens {r['tokens']}  mean completion {r['mean_latency']:.2f}s"
                      f"  client CPU {r['cpu_ms']:.2f} ms/request", flush=True)
        rt = await round_trips(endpoint, model, a.round_trips, a.max_tokens)
    finally:
        if server is not None:
            await server.shutdown()

    fields = ("tok_s", "mean_latency", "cpu_ms")
    med = {k: {f: statistics.median(r[f] for r in v) for f in fields} for k, v in runs.items()}
    base = med["direct"]
    print(f"\n{a.n} prompts, concurrency {a.concurrency}, max_tokens {a.max_tokens}, "
          f"{a.reps} reps interleaved (medians; ratios vs the direct client in this run; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  direct aiohttp client     {base['tok_s']:7.1f} tok/s  (1.00x)  client CPU "
          f"{base['cpu_ms']:.2f} ms/request")
    def pooled(k: str) -> float:
        return sum(r["tokens"] for r in runs[k]) / sum(r["wall"] for r in runs[k])

    for k in labels[1:]:
        m = med[k]
        paired = statistics.median(r["tok_s"] / d["tok_s"]
                                   for r, d in zip(runs[k], runs["direct"], strict=True))
        print(f"  backend ({k.split('_')[1]:7s})       {m['tok_s']:7.1f} tok/s  "
              f"({m['tok_s'] / base['tok_s']:.3f}x of medians, {paired:.3f}x median of "
              f"paired reps, {pooled(k) / pooled('direct'):.3f}x pooled; target >= 0.95x)\n"
              f"      client CPU {m['cpu_ms']:.2f} ms/request "
              f"({m['cpu_ms'] - base['cpu_ms']:+.2f} ms vs direct); mean completion time in "
              f"the burst {1000 * (m['mean_latency'] - base['mean_latency']):+.0f} ms vs direct")
    print(f"  one request in flight (median of {a.round_trips}): direct "
          f"{1000 * rt['direct']:.0f} ms; backend with max_batch_wait_ms=0 adds "
          f"{1000 * (rt['backend_wait0'] - rt['direct']):+.1f} ms "
          f"({rt['backend_wait0'] / rt['direct']:.3f}x); with the default 500 ms window adds "
          f"{1000 * (rt['backend_default'] - rt['direct']):+.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
