"""The event stream: batched delivery, and no subscriber can stall or break dispatch."""

from __future__ import annotations

import asyncio
import threading
import time

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.events import EventStream
from rhapsody_lab.backends import ConcurrentExecutionBackend


def noop():
    return None


def test_threaded_subscriber_gets_batches_in_order():
    stream = EventStream()
    got: list[tuple] = []
    stream.subscribe(got.extend)
    for i in range(100):
        stream.emit_now(f"t{i}", "QUEUED", "b")
    assert stream.flush() == 100
    assert stream.drain(5)
    assert [e[1] for e in got] == [f"t{i}" for i in range(100)]
    stream.close()


def test_failing_subscriber_keeps_receiving_and_others_unaffected():
    stream = EventStream()
    good: list[tuple] = []
    calls = []

    def bad(batch):
        calls.append(len(batch))
        raise RuntimeError("subscriber bug")

    stream.subscribe(bad)
    stream.subscribe(good.extend)
    stream.subscribe(bad, inline=True)
    for _ in range(3):
        stream.emit_now("x", "QUEUED", "b")
        stream.flush()
    assert stream.drain(5)
    assert len(good) == 3 and len(calls) >= 4  # threaded + inline both called each time
    stream.close()


async def test_slow_subscriber_does_not_slow_dispatch():
    release = threading.Event()

    def slow(batch):
        release.wait(10)  # blocks its own thread for as long as the test wants

    backend = ConcurrentExecutionBackend(max_workers=2)
    async with Session([backend]) as session:
        session.subscribe(slow)
        tasks = [ComputeTask(function=noop) for _ in range(2000)]
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        await asyncio.wait_for(session.wait_tasks(tasks), 20)
        elapsed = time.perf_counter() - t0
        assert all(t.state == "DONE" for t in tasks)
        assert elapsed < 5, f"dispatch took {elapsed:.2f}s with a blocked subscriber"
        assert session.get_statistics()["counts"]["DONE"] == 2000
        release.set()


async def test_events_follow_the_state_order_per_task():
    backend = ConcurrentExecutionBackend(max_workers=2)
    seen: list[tuple] = []
    async with Session([backend]) as session:
        session.subscribe(seen.extend)
        tasks = [ComputeTask(function=noop) for _ in range(50)]
        tasks.append(ComputeTask(executable="/bin/true"))
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        session.events.drain()
        by_uid: dict[str, list[str]] = {}
        for _t, uid, state, backend_name, _slot in seen:
            assert backend_name == backend.name
            by_uid.setdefault(uid, []).append(state)
    for t in tasks:
        assert by_uid[t.uid] == ["SUBMITTED", "QUEUED", "RUNNING", "DONE"]


def test_runs_reach_plain_subscribers_as_events_in_order_and_run_takers_as_records():
    """``emit_run`` events arrive as tuples, interleaved in emission order; a ``runs=True``
    subscriber gets the run as one record that ``expand`` turns into the same tuples."""
    from rhapsody_lab.api.events import RUN, expand
    stream = EventStream()
    plain: list[tuple] = []
    records: list[tuple] = []
    inline: list[tuple] = []
    stream.subscribe(plain.extend)
    stream.subscribe(records.extend, runs=True)
    stream.subscribe(inline.extend, inline=True)
    stream.emit((0.5, "z", "QUEUED", "b", None))
    stream.emit_run(1.0, ["a", "b", "c"], "SUBMITTED", "b", None)
    stream.emit((1.5, "z", "RUNNING", "b", 0))
    stream.emit_run([2.0, 2.1], ["a", "b"], "DONE", "b", [0, 1])
    stream.emit_run(3.0, [], "DONE", "b")  # nothing
    assert stream.pending == 7
    assert stream.flush() == 7 and stream.pending == 0
    assert stream.drain(5)
    expected = [(0.5, "z", "QUEUED", "b", None), (1.0, "a", "SUBMITTED", "b", None),
                (1.0, "b", "SUBMITTED", "b", None), (1.0, "c", "SUBMITTED", "b", None),
                (1.5, "z", "RUNNING", "b", 0), (2.0, "a", "DONE", "b", 0),
                (2.1, "b", "DONE", "b", 1)]
    assert plain == expected and inline == expected
    assert len(records) == 4 and records[1][0] == RUN and expand(records) == expected
    assert stream.emitted_total == 7
    stream.close()


def test_a_flush_limit_bounds_a_batch_of_runs_and_the_rest_follows():
    stream = EventStream()
    got: list[tuple] = []
    stream.subscribe(got.extend, runs=True)
    for i in range(10):
        stream.emit_run(float(i), [f"t{i}.{j}" for j in range(100)], "QUEUED", "b")
    assert stream.flush(limit=250) == 300  # whole runs, up to the first past the limit
    assert stream.pending == 700
    while stream.flush(limit=250):
        pass
    assert stream.drain(5) and stream.pending == 0
    from rhapsody_lab.api.events import expand
    assert len(expand(got)) == 1000
    stream.close()


def test_without_run_takers_a_run_is_stored_as_events():
    stream = EventStream()
    stream.emit_run(1.0, ["a", "b"], "QUEUED", "b", 3)
    assert list(stream._buf) == [(1.0, "a", "QUEUED", "b", 3), (1.0, "b", "QUEUED", "b", 3)]
    stream.close()
