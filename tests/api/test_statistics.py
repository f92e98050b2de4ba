"""Statistics from events: counts follow state, latencies from timestamps, bounded memory."""

from __future__ import annotations

from rhapsody_lab.api.statistics import LatencyHistogram, Statistics


def test_counts_and_latencies_from_a_known_event_sequence():
    s = Statistics()
    s([(10.0, "a", "SUBMITTED", "b1", None), (10.5, "a", "QUEUED", "b1", None),
       (11.0, "a", "RUNNING", "b1", 0), (13.0, "a", "DONE", "b1", 0),
       (10.0, "b", "SUBMITTED", "b1", None), (12.0, "b", "FAILED", "b1", None)])
    snap = s.snapshot()
    assert snap["counts"] == {"DONE": 1, "FAILED": 1}
    assert snap["summary"]["total_tasks"] == 2
    assert snap["summary"]["avg_total"] == (3.0 + 2.0) / 2
    assert snap["summary"]["avg_queue"] == 0.5  # QUEUED 10.5 -> RUNNING 11.0
    assert snap["summary"]["avg_execution"] == 2.0
    assert snap["latencies"]["execution"]["count"] == 1
    assert snap["backends"]["b1"] == {"DONE": 1, "FAILED": 1}
    assert snap["throughput"]["overall"] == 2 / 3.0


def test_live_state_is_forgotten_once_terminal():
    s = Statistics()
    for i in range(1000):
        s([(1.0, f"t{i}", "SUBMITTED", "b", None), (2.0, f"t{i}", "DONE", "b", None)])
    assert not s._live and s.counts["DONE"] == 1000


def test_histogram_quantiles_are_within_bucket_resolution():
    h = LatencyHistogram()
    for v in range(1, 1001):
        h.add(v / 1000.0)  # 1 ms .. 1 s uniform
    q = h.summary()
    assert q["count"] == 1000 and abs(q["mean"] - 0.5005) < 1e-9
    assert 0.5 <= q["p50"] <= 0.5 * 1.13
    assert 0.95 <= q["p95"] <= 0.95 * 1.13
    assert q["max"] == 1.0 and q["min"] == 0.001


def test_bulk_histogram_matches_one_by_one_and_quantiles_are_close():
    import random
    rng = random.Random(7)
    values = [0.0, -1.0, 1e-9, 1e-6, 2e-6, 1e9, 5e4] + \
        [10 ** rng.uniform(-7, 5) for _ in range(5000)]
    one, bulk = LatencyHistogram(), LatencyHistogram()
    for v in values:
        one.add(v)
    bulk.extend(values[:3000])
    bulk.extend(values[3000:])
    bulk.extend([])
    assert bulk.buckets == one.buckets and bulk.n == one.n == len(values)
    assert bulk.min == one.min == 0.0 and bulk.max == one.max == 1e9
    assert abs(bulk.total - one.total) <= 1e-9 * one.total
    exact = sorted(max(v, 0.0) for v in values)
    for q in (0.5, 0.95, 0.99):
        true = exact[int(q * len(exact)) - 1]
        assert true <= bulk.quantile(q) <= true * 1.07  # its bucket's upper edge: <= 6.25% up
    assert bulk.summary()["p50"] == one.summary()["p50"]
    assert len(bulk.buckets) <= 16 * 42  # sparse: 16 per octave over the ~41 octaves used


def test_events_without_a_backend_name_and_mixed_backends_count():
    s = Statistics()
    s([(1.0, "x", "SUBMITTED", None, None), (2.0, "y", "SUBMITTED", "b1", None),
       (3.0, "x", "DONE", None, None), (4.0, "y", "RUNNING", "b1", 0)])
    assert s.counts["DONE"] == 1 and s.counts["RUNNING"] == 1 and s.total_tasks == 2
    assert s.snapshot()["backends"] == {None: {"DONE": 1}, "b1": {"RUNNING": 1}}
    assert s.first_time == 1.0


def _random_items(rng, n_tasks: int) -> list:
    """Stream items as backends emit them: runs and single events, some of them odd."""
    from rhapsody_lab.api.events import RUN
    items: list = []
    path = ("SUBMITTED", "QUEUED", "RUNNING", "DONE")
    alive = [f"t{i}" for i in range(n_tasks)]
    step = dict.fromkeys(alive, 0)
    t = 100.0
    while alive:
        t += rng.random()
        k = rng.randint(1, 12)
        group = rng.sample(alive, min(k, len(alive)))
        if rng.random() < 0.1:
            group.append(group[0])  # a uid twice in one run
        if rng.random() < 0.15:  # single events, some skipping or repeating a state
            for uid in group:
                state = rng.choice(("QUEUED", "RUNNING", "FAILED", "CANCELED"))
                items.append((t, uid, state, rng.choice(("b1", "b2")), 0))
                if state in ("FAILED", "CANCELED") and uid in step:
                    alive.remove(uid)
                    del step[uid]
            continue
        group = [u for u in dict.fromkeys(group) if u in step] + \
            [u for u in group[1:] if u == group[0] and u in step]
        states = {path[step[u]] for u in group}
        state = path[max(step[u] for u in group)] if len(states) > 1 else states.pop()
        times = [t + i * 1e-3 for i in range(len(group))] if rng.random() < 0.5 else t
        slots = list(range(len(group))) if rng.random() < 0.5 else None
        items.append((RUN, times, group, state, "b1", slots))
        for u in dict.fromkeys(group):
            step[u] = min(step[u] + 1, 3)
            if state == "DONE":
                alive.remove(u)
                del step[u]
    return items


def test_folding_runs_gives_what_their_events_give():
    import random

    from rhapsody_lab.api.events import expand
    for seed in range(30):
        items = _random_items(random.Random(seed), 60)
        by_runs, by_events = Statistics(), Statistics()
        for lo in range(0, len(items), 7):  # several batches, runs between events
            by_runs.fold_items(items[lo:lo + 7])
            by_events(expand(items[lo:lo + 7]))
        a, b = by_runs.snapshot(), by_events.snapshot()
        assert a == b, seed
        assert by_runs._live == by_events._live
        assert by_runs.total.buckets == by_events.total.buckets


def test_a_session_folds_runs_when_a_subscriber_takes_them():
    import asyncio

    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import ConcurrentExecutionBackend

    got: list = []

    async def main():
        async with Session([ConcurrentExecutionBackend(max_workers=2)]) as s:
            s.events.subscribe(got.extend, runs=True)
            tasks = [ComputeTask(function=int) for _ in range(500)]
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
            s.events.drain(5)
            return s.get_statistics()

    stats = asyncio.run(main())
    from rhapsody_lab.api.events import RUN
    assert any(item[0] is RUN and item[3] == "RUNNING" for item in got)  # drains' runs
    assert stats["counts"] == {"DONE": 500}
    assert stats["summary"]["total_tasks"] == 500
    assert stats["latencies"]["execution"]["count"] == 500
    assert stats["latencies"]["queue"]["count"] == 500
