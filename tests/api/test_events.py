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
