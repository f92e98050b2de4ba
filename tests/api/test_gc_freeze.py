"""A big submit keeps the cyclic GC off its tasks while they run, and gives the heap back."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from rhapsody_lab.api import ComputeTask, Session, gcfreeze
from rhapsody_lab.api.errors import SessionError, TaskValidationError
from rhapsody_lab.backends import ConcurrentExecutionBackend

BIG = 6_000  # above the session's freeze threshold


def noop():
    return None


def gated(gate: threading.Event):
    gate.wait(30)
    return "released"


@pytest.fixture(autouse=True)
def _clean_gc():
    assert gc.get_freeze_count() == 0 and gcfreeze.holders() == 0
    yield
    leftover = gc.get_freeze_count()
    gc.unfreeze()
    assert leftover == 0 and gcfreeze.holders() == 0, "the heap was left frozen"


async def test_big_submit_freezes_while_in_flight_and_releases_when_idle():
    gate = threading.Event()
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        blocker = ComputeTask(function=gated, args=(gate,))
        tasks = [blocker] + [ComputeTask(function=noop) for _ in range(BIG)]
        futures = await session.submit_tasks(tasks)
        assert gcfreeze.holders() == 1
        assert gc.get_freeze_count() >= BIG  # the tasks and their futures are frozen
        await asyncio.sleep(0.2)
        assert gcfreeze.holders() == 1  # the blocker is still running: keep it
        gate.set()
        await session.wait_tasks(tasks)
        for _ in range(50):  # released by the backend's next batch report
            if gcfreeze.holders() == 0:
                break
            await asyncio.sleep(0.02)
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        assert blocker.return_value == "released"
        assert all(f.done() for f in futures) and all(t.state == "DONE" for t in tasks)


async def test_small_submits_never_freeze():
    async with Session([ConcurrentExecutionBackend()]) as session:
        tasks = [ComputeTask(function=noop) for _ in range(100)]
        await session.submit_tasks(tasks)
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        await session.wait_tasks(tasks)


async def test_a_refused_big_submit_gives_the_freeze_back():
    async with Session([ConcurrentExecutionBackend()]) as session:
        tasks = [ComputeTask(function=noop) for _ in range(BIG)]
        tasks[-1]["backend"] = "nowhere"
        with pytest.raises(SessionError, match="nowhere"):
            await session.submit_tasks(tasks)
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        assert all(t.state == "NEW" and t.future is None for t in tasks)


async def test_close_releases_the_freeze_with_tasks_in_flight():
    gate = threading.Event()
    session = await Session([ConcurrentExecutionBackend(max_workers=1)]).start()
    tasks = [ComputeTask(function=gated, args=(gate,))] + \
        [ComputeTask(function=noop) for _ in range(BIG)]
    await session.submit_tasks(tasks)
    assert gcfreeze.holders() == 1
    gate.set()
    await session.close()
    assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
    assert {t.state for t in tasks} <= {"DONE", "CANCELED"}


async def test_an_application_freeze_is_left_alone():
    gc.freeze()
    mine = gc.get_freeze_count()
    try:
        async with Session([ConcurrentExecutionBackend()]) as session:
            tasks = [ComputeTask(function=noop) for _ in range(BIG)]
            await session.submit_tasks(tasks)
            assert gcfreeze.holders() == 0
            await session.wait_tasks(tasks)
        assert gc.get_freeze_count() > mine // 2  # never unfrozen by the session
    finally:
        gc.unfreeze()


async def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("RHAPSODY_LAB_GC_FREEZE", "0")
    async with Session([ConcurrentExecutionBackend()]) as session:
        tasks = [ComputeTask(function=noop) for _ in range(BIG)]
        await session.submit_tasks(tasks)
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        await session.wait_tasks(tasks)


async def test_two_sessions_share_the_freeze():
    gate = threading.Event()
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as a, \
            Session([ConcurrentExecutionBackend(max_workers=1)]) as b:
        ta = [ComputeTask(function=noop) for _ in range(BIG)]
        tb = [ComputeTask(function=gated, args=(gate,))] + \
            [ComputeTask(function=noop) for _ in range(BIG)]
        await b.submit_tasks(tb)
        await a.submit_tasks(ta)
        assert gcfreeze.holders() == 2
        await a.wait_tasks(ta)
        for _ in range(50):
            if gcfreeze.holders() == 1:
                break
            await asyncio.sleep(0.02)
        assert gcfreeze.holders() == 1 and gc.get_freeze_count() > 0  # b still runs
        gate.set()
        await b.wait_tasks(tb)


async def test_alike_chunks_route_like_single_tasks():
    """The chunk fast path gives the same routes and errors as the per-task path."""
    async with Session([ConcurrentExecutionBackend(name="a"),
                        ConcurrentExecutionBackend(name="b")]) as session:
        funcs = [ComputeTask(function=noop) for _ in range(300)]
        funcs[150]["backend"] = "b"  # one named task breaks the chunk: per-task routing
        exes = [ComputeTask(executable="/bin/true") for _ in range(100)]
        await session.submit_tasks(funcs + exes)
        await session.wait_tasks(funcs + exes)
        assert [t.backend for t in funcs].count("b") == 1 and funcs[150].backend == "b"
        assert {t.backend for t in exes} == {"a"}
        assert all(t.state == "DONE" for t in funcs + exes)
        mixed = [ComputeTask(function=noop) for _ in range(100)]
        mixed[50] = ComputeTask(executable="/bin/true")
        await session.submit_tasks(mixed)
        await session.wait_tasks(mixed)
        assert all(t.state == "DONE" and t.backend == "a" for t in mixed)
        done = [ComputeTask(function=noop) for _ in range(100)]
        done[99] = funcs[0]  # already submitted: refused, nothing of the call submitted
        with pytest.raises(SessionError, match="already submitted"):
            await session.submit_tasks(done)
        assert all(t.state == "NEW" for t in done[:99])
        bad = [ComputeTask(executable="/bin/true") for _ in range(100)]
        bad[10]["task_backend_specific_kwargs"] = {"timeout": -1}
        with pytest.raises(TaskValidationError, match="timeout"):
            await session.submit_tasks(bad)
        assert all(t.state == "NEW" for t in bad)


async def test_overlapping_big_submits_give_the_heap_back_until_idle():
    """Waves: a big batch while another runs unfreezes (finished tasks must stay
    collectable); once the session is idle, the next big batch freezes again."""
    gate = threading.Event()
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        first = [ComputeTask(function=gated, args=(gate,))] + \
            [ComputeTask(function=noop) for _ in range(BIG)]
        await session.submit_tasks(first)
        assert gcfreeze.holders() == 1
        second = [ComputeTask(function=noop) for _ in range(BIG)]
        await session.submit_tasks(second)  # overlaps the first: no freeze now
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        third = [ComputeTask(function=noop) for _ in range(BIG)]
        await session.submit_tasks(third)  # still waves: stays unfrozen
        assert gcfreeze.holders() == 0 and gc.get_freeze_count() == 0
        gate.set()
        await session.wait_tasks(first + second + third)
        for _ in range(50):  # idle again (noticed with the next batch report)
            if not session._gc_waves:
                break
            await asyncio.sleep(0.02)
        assert not session._gc_waves
        fourth = [ComputeTask(function=noop) for _ in range(BIG)]
        await session.submit_tasks(fourth)
        assert gcfreeze.holders() == 1  # a lone big batch freezes again
        await session.wait_tasks(fourth)
        for _ in range(50):
            if gcfreeze.holders() == 0:
                break
            await asyncio.sleep(0.02)
        assert all(t.state == "DONE" for t in first + second + third + fourth)
