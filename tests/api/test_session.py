"""Session: the RHAPSODY contract (wait modes, exceptions, routing, statistics) on real threads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

import rhapsody_lab
from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import (
    BackendError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody_lab.backends import ConcurrentExecutionBackend


def hello():
    import socket
    return f"Hello from {socket.gethostname()}!"


def boom():
    raise KeyError("missing")


def slow(seconds):
    time.sleep(seconds)
    return seconds


async def test_tutorial_basic_example_shape():
    backend = await ConcurrentExecutionBackend()
    session = Session(backends=[backend])
    task = ComputeTask(function=hello)
    async with session:
        futures = await session.submit_tasks([task])
        results = await asyncio.gather(*futures)
    assert results == [task]
    assert task.state == "DONE" and task.return_value.startswith("Hello from ")
    assert task.stdout == task.return_value and task.backend == "concurrent"
    assert await backend.state() == "SHUTDOWN"


async def test_three_wait_modes_and_exception_mapping():
    async with Session([ConcurrentExecutionBackend()]) as session:
        ok = ComputeTask(function=hello)
        raised = ComputeTask(function=boom)
        exe = ComputeTask(executable="/bin/sh", arguments=["-c", "echo oops >&2; exit 4"])
        tasks = [ok, raised, exe]
        futures = await session.submit_tasks(tasks)
        # 1. wait_tasks never raises on failure
        assert await session.wait_tasks(tasks, timeout=30) == tasks
        assert [t.state for t in tasks] == ["DONE", "FAILED", "FAILED"]
        assert isinstance(raised.exception, KeyError) and "KeyError" in raised.stderr
        assert exe.exit_code == 4 and exe.stderr == "oops\n"
        # 2. gather raises the first failure; return_exceptions collects all
        with pytest.raises(KeyError):
            await asyncio.gather(*futures)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[0] is ok and isinstance(results[1], KeyError)
        err = results[2]
        assert isinstance(err, TaskExecutionError) and isinstance(err, RhapsodyError)
        assert err.task_uid == exe.uid and err.exit_code == 4 and "oops" in str(err)
        # 3. await future / await task raise for their own task only
        assert await futures[0] is ok and await ok is ok
        with pytest.raises(TaskExecutionError):
            await exe


async def test_submit_returns_before_tasks_run():
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        tasks = [ComputeTask(function=slow, args=(0.3,)) for _ in range(4)]
        t0 = time.perf_counter()
        futures = await session.submit_tasks(tasks)
        assert time.perf_counter() - t0 < 0.2
        assert len(futures) == 4 and not any(f.done() for f in futures)
        await asyncio.gather(*futures)
        assert [t.return_value for t in tasks] == [0.3] * 4


async def test_wait_tasks_timeout_raises_and_tasks_go_on():
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as session:
        t = ComputeTask(function=slow, args=(0.5,))
        await session.submit_tasks([t])
        with pytest.raises(asyncio.TimeoutError, match="0/1 tasks finished"):
            await session.wait_tasks([t], timeout=0.05)
        await session.wait_tasks([t])
        assert t.state == "DONE"


async def test_explicit_and_implicit_routing():
    a = ConcurrentExecutionBackend(name="local_cpu", max_workers=1)
    b = ConcurrentExecutionBackend(name="hpc_gpu", max_workers=1)
    await asyncio.gather(a, b)
    async with Session(backends=[a, b]) as session:
        t1 = ComputeTask(function=hello, backend=a.name)
        t2 = ComputeTask(function=hello, backend=b.name)
        t3 = ComputeTask(function=hello)
        await session.submit_tasks([t1, t2, t3])
        await asyncio.gather(t1, t2, t3)
        assert (t1.backend, t2.backend, t3.backend) == ("local_cpu", "hpc_gpu", "local_cpu")
        assert session.get_statistics()["backends"]["hpc_gpu"] == {"DONE": 1}


async def test_unknown_backend_refuses_the_whole_call():
    async with Session([ConcurrentExecutionBackend()]) as session:
        good = ComputeTask(function=hello)
        bad = ComputeTask(function=hello, backend="nope")
        with pytest.raises(SessionError) as err:
            await session.submit_tasks([good, bad])
        assert str(err.value).startswith(
            f"Backend 'nope' requested by task {bad.uid} not found")
        assert isinstance(err.value, ValueError)
        assert good.state == "NEW" and good.future is None  # nothing was submitted


async def test_ai_task_without_inference_backend_is_refused():
    async with Session([ConcurrentExecutionBackend()]) as session:
        with pytest.raises(TaskValidationError, match="inference backend"):
            await session.submit_tasks([AITask(model="m", prompt="2+2?")])
        with pytest.raises(TaskValidationError, match="cannot run ai tasks"):
            await session.submit_tasks([AITask(prompt="2+2?", backend="concurrent")])


async def test_resubmission_and_duplicate_uids_are_refused():
    async with Session([ConcurrentExecutionBackend()]) as session:
        t = ComputeTask(function=hello)
        await session.submit_tasks([t])
        with pytest.raises(SessionError, match="already submitted"):
            await session.submit_tasks([t])
        a, b = ComputeTask(function=hello, uid="same"), ComputeTask(function=hello, uid="same")
        with pytest.raises(TaskValidationError, match="uid"):
            await session.submit_tasks([a, b])
        with pytest.raises(SessionError, match="list of tasks"):
            await session.submit_tasks(ComputeTask(function=hello))
        with pytest.raises(TaskValidationError, match="ComputeTask"):
            await session.submit_tasks(["hello"])  # (a plain dict is a task: test_parity)
        await session.wait_tasks([t])


async def test_tasks_waiting_for_their_hand_off_cannot_be_submitted_again():
    """A big submit binds every future at once and hands tasks over in the background:
    tasks still NEW there are refused by this session and by another one (their uids stay
    claimed until the hand-off ends)."""
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as a, \
            Session([ConcurrentExecutionBackend(max_workers=2)]) as b:
        tasks = [ComputeTask(function=int) for _ in range(3000)]
        await a.submit_tasks(tasks)  # the first ones handed over, the rest pending
        later = tasks[-200:]
        assert {t.state for t in later} == {"NEW"} and a._pending
        for session in (a, b):
            with pytest.raises(SessionError, match="already submitted"):
                await session.submit_tasks(later)
        await a.wait_tasks(tasks)
        assert {t.state for t in tasks} == {"DONE"}
        fresh = [ComputeTask(function=int) for _ in range(200)]
        await b.submit_tasks(fresh)  # nothing pending anywhere: the short route
        await b.wait_tasks(fresh)
        assert {t.state for t in fresh} == {"DONE"}


@pytest.mark.parametrize(("n", "yield_after"), [(40_000, None), (300, 0.0), (60, 0.0)])
async def test_concurrent_submits_of_the_same_tasks(monkeypatch, n, yield_after):
    """Two submit_tasks calls of one list at once (each may pause while routing or binding):
    exactly one is accepted, and every one of its futures resolves."""
    import rhapsody_lab.api.submission as session_module
    from rhapsody_lab.api import claims
    if yield_after is not None:  # pause after every chunk, as a huge call does
        monkeypatch.setattr(session_module, "_YIELD_AFTER", yield_after)
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as s, \
            Session([ConcurrentExecutionBackend(max_workers=2)]) as other:
        tasks = [ComputeTask(function=int) for _ in range(n)]
        results = await asyncio.gather(s.submit_tasks(tasks), s.submit_tasks(tasks),
                                       other.submit_tasks(tasks), return_exceptions=True)
        accepted = [r for r in results if isinstance(r, list)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(accepted) == 1 and len(refused) == 2, results
        assert all(isinstance(e, SessionError) and "already submitted" in str(e)
                   for e in refused)
        await asyncio.wait_for(asyncio.gather(*accepted[0]), 60)
        assert {t.state for t in tasks} == {"DONE"}
        assert not claims.claimed


async def test_a_canceled_submit_leaves_its_tasks_unbound(monkeypatch):
    """Canceling submit_tasks while it binds futures: the caller never got them, so the
    tasks stay NEW and unbound, and a later submit of them runs them all."""
    import rhapsody_lab.api.submission as session_module
    from rhapsody_lab.api import claims
    monkeypatch.setattr(session_module, "_YIELD_AFTER", 0.0)
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as s:
        tasks = [ComputeTask(function=int) for _ in range(5000)]
        job = asyncio.ensure_future(s.submit_tasks(tasks))
        while tasks[0]._future is None:
            await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert {t.state for t in tasks} == {"NEW"}
        assert all(t._future is None for t in tasks) and not claims.claimed
        await s.submit_tasks(tasks[:20])
        with pytest.raises(SessionError, match="already submitted"):
            await s.submit_tasks(tasks)  # holds the 20 just submitted
        await s.submit_tasks(tasks[20:])
        await s.wait_tasks(tasks)
        assert {t.state for t in tasks} == {"DONE"}


async def test_the_same_uid_in_two_sessions_at_once():
    """uids are per session: other task objects with the same explicit uids may be
    submitted to another session while the first submit is still handing over."""
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as a, \
            Session([ConcurrentExecutionBackend(max_workers=2)]) as b:
        first = [ComputeTask(function=int, uid=f"t{i}") for i in range(3000)]
        second = [ComputeTask(function=int, uid=f"t{i}") for i in range(3000)]
        await asyncio.gather(a.submit_tasks(first), b.submit_tasks(second))
        await asyncio.gather(a.wait_tasks(first), b.wait_tasks(second))
        assert {t.state for t in first + second} == {"DONE"}


async def test_closed_session_and_bad_backends():
    session = Session()
    with pytest.raises(SessionError, match="no backend"):
        await session.submit_tasks([ComputeTask(function=hello)])
    with pytest.raises(SessionError, match="pass the class"):
        session.add_backend(ConcurrentExecutionBackend)
    with pytest.raises(SessionError, match="list of backends"):
        Session(backends="concurrent")
    session.add_backend(ConcurrentExecutionBackend(name="x"))
    with pytest.raises(SessionError, match="already registered"):
        session.add_backend(ConcurrentExecutionBackend(name="x"))
    await session.close()
    with pytest.raises(SessionError, match="closed"):
        await session.submit_tasks([ComputeTask(function=hello)])
    with pytest.raises(SessionError, match="not submitted"):
        await session.wait_tasks([ComputeTask(function=hello)])
    with pytest.raises(SessionError, match="timeout"):
        await Session().wait_tasks([], timeout=-1)


async def test_backend_used_after_shutdown_raises_backend_error():
    backend = await ConcurrentExecutionBackend()
    await backend.shutdown()
    with pytest.raises(BackendError, match="shutdown"):
        await backend.initialize()
    with pytest.raises(BackendError):
        await backend.submit_tasks([ComputeTask(function=hello)])


async def test_statistics_shape_and_values():
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        tasks = [ComputeTask(function=slow, args=(0.05,)) for _ in range(4)]
        tasks.append(ComputeTask(function=boom))
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        stats = session.get_statistics()
    assert stats["counts"] == {"DONE": 4, "FAILED": 1}
    s = stats["summary"]
    assert s["total_tasks"] == 5
    assert 0.04 < s["avg_execution"] < 0.5 and s["avg_total"] >= s["avg_execution"]
    assert s["avg_queue"] >= 0 and stats["latencies"]["execution"]["count"] == 5
    assert stats["throughput"]["overall"] > 0 and stats["capacity"] == {"concurrent": 2}


async def test_register_callback_sees_every_state_on_the_loop():
    backend = await ConcurrentExecutionBackend(max_workers=1)
    seen = []
    loop_thread = []

    def cb(task, state):
        import threading
        loop_thread.append(threading.current_thread().name)
        seen.append((task["uid"], state))

    backend.register_callback(cb)
    async with Session([backend]) as session:
        t = ComputeTask(function=hello)
        await session.submit_tasks([t])
        await t
    assert [s for _, s in seen] == ["QUEUED", "RUNNING", "DONE"]
    assert set(loop_thread) == {"MainThread"}


def test_top_level_names_and_registry():
    for name in ("ComputeTask", "AITask", "BaseTask", "Session", "get_backend",
                 "discover_backends", "__version__", "RhapsodyError", "BackendError",
                 "TaskValidationError", "TaskExecutionError", "SessionError", "ResourceError"):
        assert hasattr(rhapsody_lab, name), name
    backend = rhapsody_lab.get_backend("concurrent", name="viaregistry")
    assert isinstance(backend, ConcurrentExecutionBackend) and backend.name == "viaregistry"
    assert rhapsody_lab.discover_backends()["concurrent"] is True
    with pytest.raises(SessionError, match="Backend 'nope' not found"):
        rhapsody_lab.get_backend("nope")


def test_import_is_light_and_fast():
    # the import's CPU time: what it costs, robust when other tests load the machine (its
    # wall time, shown too, also counts the time other processes had the cores)
    code = ("import time,sys; t=time.perf_counter(); c=time.process_time(); "
            "import rhapsody_lab; import rhapsody_lab.api; "
            "cpu=time.process_time()-c; wall=time.perf_counter()-t; "
            "heavy=[m for m in ('dask','distributed','bokeh','IPython','dragon','cloudpickle') "
            "if m in sys.modules]; print(cpu, wall, heavy)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ}).stdout for _ in range(3)]
    assert all(out.strip().endswith("[]") for out in runs), runs
    cpu, wall = min((float(out.split()[0]), float(out.split()[1])) for out in runs)
    assert cpu < 0.3, f"import took {cpu:.3f}s of CPU ({wall:.3f}s wall)"


async def test_cancel_and_close_while_a_big_submit_is_still_being_handed_over():
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as session:
        tasks = [ComputeTask(function=slow, args=(0.001,)) for _ in range(3000)]
        await session.submit_tasks(tasks)
        last = tasks[-1]
        assert await session.cancel_task(last.uid) is True
        assert last.state == "CANCELED" and await last is last
        with pytest.raises(TaskValidationError, match="uid"):
            await session.submit_tasks([ComputeTask(function=hello, uid=tasks[-2].uid)])
    assert all(t.state in ("DONE", "CANCELED") for t in tasks)
    assert sum(t.state == "CANCELED" for t in tasks) >= 1
    assert all(t.future.done() for t in tasks)


async def test_counts_and_cancel_all():
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as session:
        tasks = [ComputeTask(function=slow, args=(0.2,)) for _ in range(400)]
        await session.submit_tasks(tasks)
        await asyncio.sleep(0.05)
        n = await session.cancel_all()
        assert n >= 398  # all but the running one (and maybe the next)
        await session.wait_tasks(tasks, timeout=10)
        session.get_statistics()
        counts = session.counts()
        assert counts.get("CANCELED") == n and sum(counts.values()) == 400


class _Refusing(ConcurrentExecutionBackend):
    """A real thread backend whose submit_tasks refuses every batch (a broken backend)."""

    async def submit_tasks(self, tasks):
        raise BackendError(self.name, "out of service")


async def test_a_backend_that_refuses_fails_only_its_own_tasks():
    async with Session([ConcurrentExecutionBackend(name="ok"), _Refusing(name="broken")]) \
            as session:
        good = [ComputeTask(function=hello, backend="ok") for _ in range(300)]
        bad = [ComputeTask(function=hello, backend="broken") for _ in range(300)]
        mixed = [t for pair in zip(good, bad, strict=True) for t in pair]
        futures = await session.submit_tasks(mixed)  # accepted: refusal comes at hand-off
        await session.wait_tasks(mixed)
        assert all(t.state == "DONE" and t.return_value.startswith("Hello") for t in good)
        assert all(t.state == "FAILED" and isinstance(t.exception, BackendError)
                   and "refused the task" in t.stderr for t in bad)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert sum(isinstance(r, BackendError) for r in results) == 300
        assert session.get_statistics()["counts"] == {"DONE": 300, "FAILED": 300}
        more = [ComputeTask(function=hello) for _ in range(5)]  # the session stays usable
        await session.submit_tasks(more)
        await session.wait_tasks(more)
        assert all(t.state == "DONE" and t.backend == "ok" for t in more)


def test_a_backends_flush_min_decides_when_its_batches_deliver_events():
    """A backend's finished batch delivers the stream's events at once only from its
    ``flush_min`` pending on (Dragon waits for the 0.1 s timer); fewer wait for the timer."""
    class Deferring(ConcurrentExecutionBackend):
        flush_min = 5

    lazy, eager = Deferring(name="lazy"), ConcurrentExecutionBackend(name="eager")
    eager.flush_min = 1
    s = Session(backends=[lazy, eager])
    for i in range(4):
        s.events.emit((time.time(), f"t{i}", "SUBMITTED", "lazy", None))
    lazy._wake_session()
    assert s.events.pending == 4  # under lazy's flush_min: left to the timer
    s.events.emit((time.time(), "t4", "SUBMITTED", "lazy", None))
    lazy._wake_session()
    assert s.events.pending == 0 and s.get_statistics()["counts"]["SUBMITTED"] == 5
    s.events.emit((time.time(), "t5", "SUBMITTED", "eager", None))
    eager._wake_session()
    assert s.events.pending == 0


async def test_wait_tasks_names_the_first_task_never_submitted():
    backend = await ConcurrentExecutionBackend()
    async with Session(backends=[backend]) as session:
        done = [ComputeTask(function=hello) for _ in range(3)]
        await session.submit_tasks(done)
        stray = ComputeTask(function=hello, uid="stray.1")
        with pytest.raises(SessionError, match=r"task stray\.1 was not submitted"):
            await session.wait_tasks([*done, stray])
        with pytest.raises(SessionError, match=r"task plain\.1 was not submitted"):
            await session.wait_tasks([done[0], {"uid": "plain.1"}])
        assert await session.wait_tasks(done) == done  # the error lost nothing
        assert [t.state for t in done] == ["DONE"] * 3
