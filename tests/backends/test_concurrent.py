"""ConcurrentExecutionBackend on real threads, processes and child processes."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import BackendError, SessionError, TaskValidationError
from rhapsody_lab.backends import ConcurrentExecutionBackend


def square(x):
    return x * x


async def async_double(x):
    await asyncio.sleep(0.01)
    return 2 * x


def raises():
    raise ZeroDivisionError("in the worker")


def pid():
    return os.getpid()


def sleep_then(seconds, path=None):
    time.sleep(seconds)
    if path:
        open(path, "w").close()
    return seconds


def crash():
    os._exit(13)


def make_backend(kind: str, workers: int = 2) -> ConcurrentExecutionBackend:
    if kind == "processes":
        return ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=workers))
    return ConcurrentExecutionBackend(ThreadPoolExecutor(max_workers=workers))


@pytest.mark.parametrize("kind", ["threads", "processes"])
async def test_sync_async_and_failing_functions(kind, no_children):
    async with Session([make_backend(kind)]) as session:
        local = 7
        tasks = [ComputeTask(function=square, args=(3,)),
                 ComputeTask(function=async_double, args=(4,)),
                 ComputeTask(function=lambda: local + 1),  # closures need cloudpickle
                 ComputeTask(function=raises),
                 ComputeTask(function=pid)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        assert [t.return_value for t in tasks[:3]] == [9, 8, 8]
        assert tasks[0].stdout == "9" and tasks[0].exit_code == 0
        assert tasks[3].state == "FAILED" and isinstance(tasks[3].exception, ZeroDivisionError)
        assert "in the worker" in tasks[3].stderr and "raises" in tasks[3].stderr
        with pytest.raises(ZeroDivisionError):
            await tasks[3]
        assert (tasks[4].return_value != os.getpid()) == (kind == "processes")


async def test_executables_capture_cwd_env_shell(tmp_path):
    (tmp_path / "marker.txt").write_text("x")
    async with Session([ConcurrentExecutionBackend()]) as session:
        opts = {"cwd": str(tmp_path), "env": {"RHAPSODY_LAB_X": "42"}}
        tasks = [
            ComputeTask(executable="/bin/ls", task_backend_specific_kwargs=opts),
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo $RHAPSODY_LAB_X $HOME"],
                        task_backend_specific_kwargs=opts),
            ComputeTask(executable="echo", arguments=["a", "|", "tr", "a", "b"],
                        task_backend_specific_kwargs={"shell": True}),
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo err >&2; exit 7"]),
            ComputeTask(executable="/no/such/binary"),
            ComputeTask(executable="/bin/true", task_backend_specific_kwargs={
                "cwd": str(tmp_path / "missing")}),
        ]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
    ls, env, shell, fail, missing, nocwd = tasks
    assert ls.stdout == "marker.txt\n" and ls.exit_code == 0
    assert env.stdout.split()[0] == "42" and len(env.stdout.split()) == 2  # env is added
    assert shell.stdout == "b\n"
    assert (fail.state, fail.exit_code, fail.stderr) == ("FAILED", 7, "err\n")
    assert missing.state == "FAILED" and missing.exit_code == 127
    assert "executable not found" in missing.stderr
    assert nocwd.state == "FAILED" and "working directory not found" in nocwd.stderr


async def test_timeout_kills_the_process_group(tmp_path, no_children):
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    task = ComputeTask(executable="/bin/sh", arguments=["-c", script],
                       task_backend_specific_kwargs={"timeout": 0.5})
    async with Session([ConcurrentExecutionBackend()]) as session:
        t0 = time.perf_counter()
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=10)
        assert time.perf_counter() - t0 < 5
    assert task.state == "FAILED" and "timed out after 0.5s" in task.stderr
    grandchild = int(pidfile.read_text())
    assert not _alive(grandchild)


async def test_cancel_queued_task_never_starts(tmp_path):
    flag = tmp_path / "ran"
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as session:
        blocker = ComputeTask(function=sleep_then, args=(0.3,))
        victim = ComputeTask(function=sleep_then, args=(0, str(flag)))
        other = ComputeTask(function=square, args=(5,))
        await session.submit_tasks([blocker, victim, other])
        assert await session.cancel_task(victim) is True
        assert victim.state == "CANCELED"
        await session.wait_tasks([blocker, victim, other])
        assert await victim is victim  # a canceled task resolves, it did not fail
    assert not flag.exists()
    assert (blocker.state, other.state, other.return_value) == ("DONE", "DONE", 25)


async def test_cancel_running_executable_ends_it_and_its_children(tmp_path, no_children):
    pidfile = tmp_path / "child.pid"
    task = ComputeTask(executable="/bin/sh",
                       arguments=["-c", f"sleep 30 & echo $! > {pidfile}; wait"])
    async with Session([ConcurrentExecutionBackend()]) as session:
        await session.submit_tasks([task])
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.02)
        assert await session.cancel_task(task.uid) is True
        await session.wait_tasks([task], timeout=10)
    assert task.state == "CANCELED"
    assert not _alive(int(pidfile.read_text()))


async def test_close_cancels_running_and_queued_tasks(no_children):
    session = Session([ConcurrentExecutionBackend(max_workers=1)])
    await session.start()
    running = ComputeTask(executable="/bin/sleep", arguments=["30"])
    queued = ComputeTask(function=square, args=(2,))
    await session.submit_tasks([running, queued])
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    await session.close()
    assert time.perf_counter() - t0 < 5
    assert running.state == "CANCELED" and queued.state == "CANCELED"


async def test_process_close_ends_worker_processes(no_children):
    session = Session([make_backend("processes")])
    await session.start()
    t = ComputeTask(function=sleep_then, args=(30,))
    await session.submit_tasks([t])
    await asyncio.sleep(0.3)
    await session.close()
    assert t.state == "CANCELED"


async def test_a_dying_worker_process_fails_its_task_and_the_backend_recovers():
    async with Session([make_backend("processes")]) as session:
        victim = ComputeTask(function=crash)
        await session.submit_tasks([victim])
        await session.wait_tasks([victim], timeout=30)
        assert victim.state == "FAILED" and isinstance(victim.exception, BackendError)
        assert "worker process died" in str(victim.exception)
        after = [ComputeTask(function=square, args=(i,)) for i in range(10)]
        await session.submit_tasks(after)
        await session.wait_tasks(after, timeout=30)
        assert [t.return_value for t in after] == [i * i for i in range(10)]


def test_bad_constructor_input():
    with pytest.raises(SessionError, match="ThreadPoolExecutor or ProcessPoolExecutor"):
        ConcurrentExecutionBackend(executor="threads")
    with pytest.raises(SessionError, match="max_workers"):
        ConcurrentExecutionBackend(max_workers=0)
    with pytest.raises(SessionError, match="name"):
        ConcurrentExecutionBackend(name="has space")


@pytest.mark.parametrize("opts, field", [
    ({"timeout": -1}, "timeout"), ({"timeout": "5"}, "timeout"), ({"shell": "yes"}, "shell"),
    ({"env": {"A": None}}, "env"), ({"env": ["A=1"]}, "env"), ({"cwd": 3}, "cwd"),
])
async def test_bad_execution_options_are_refused_at_submit(opts, field):
    async with Session([ConcurrentExecutionBackend()]) as session:
        good = ComputeTask(executable="/bin/true")
        bad = ComputeTask(executable="/bin/true", task_backend_specific_kwargs=opts)
        with pytest.raises(TaskValidationError) as err:
            await session.submit_tasks([good, bad])
        assert err.value.field == f"task_backend_specific_kwargs.{field}"
        assert good.state == "NEW"


async def test_capacity_and_state():
    backend = ConcurrentExecutionBackend(max_workers=3)
    assert await backend.state() == "NEW" and backend.capacity() == 3
    async with backend:
        assert await backend.state() == "RUNNING"
    assert await backend.state() == "SHUTDOWN"


def read_state(backend):
    return backend.backend_state  # in a worker: a plain read from another thread


async def test_backend_state_property_follows_the_life_cycle():
    backend = ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2))
    assert backend.backend_state == "NEW"
    starting = asyncio.ensure_future(backend.initialize())
    await asyncio.sleep(0)  # the pool's worker processes are still starting
    assert backend.backend_state == "STARTING" == await backend.state()
    await starting
    try:
        assert backend.backend_state == "RUNNING" == await backend.state()
        async with Session([ConcurrentExecutionBackend(name="threads", max_workers=1)]) as s:
            task = ComputeTask(function=read_state, args=(backend,), backend="threads")
            await s.submit_tasks([task])
            await s.wait_tasks([task])
            assert task["return_value"] == "RUNNING"
        with pytest.raises(AttributeError):
            backend.backend_state = "RUNNING"  # read-only
    finally:
        await backend.shutdown()
    assert backend.backend_state == "SHUTDOWN" == await backend.state()

    closed = ThreadPoolExecutor(max_workers=1)
    closed.shutdown()
    broken = ConcurrentExecutionBackend(closed)
    with pytest.raises(BackendError, match="could not start"):
        await broken.initialize()
    assert broken.backend_state == "FAILED"


def _alive(pid_: int) -> bool:
    try:
        with open(f"/proc/{pid_}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["threads", "processes"])
async def test_a_future_cancelled_by_the_user_leaves_the_batch_intact(kind):
    """Drains finish runs of outcomes at once; one future the caller cancelled (or a
    callback) sends that run down the one-by-one path, and nothing else changes."""
    pool = ThreadPoolExecutor(2) if kind == "threads" else ProcessPoolExecutor(2)
    backend = await ConcurrentExecutionBackend(pool)
    async with Session([backend]) as session:
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(3000)]
        futures = await session.submit_tasks(tasks)
        futures[1500].cancel()
        await asyncio.gather(*futures, return_exceptions=True)
        await session.wait_tasks(tasks)
        assert [t.return_value for t in tasks] == [i * i for i in range(3000)]
        assert {t.state for t in tasks} == {"DONE"}
        assert futures[1500].cancelled() and tasks[0].future.result() is tasks[0]
        seen = []
        backend.register_callback(lambda task, state: seen.append(state))
        more = [ComputeTask(function=square, args=(i,)) for i in range(500)]
        await session.submit_tasks(more)
        await session.wait_tasks(more)
        assert [t.return_value for t in more] == [i * i for i in range(500)]
        assert seen.count("DONE") == 500
        assert session.get_statistics()["counts"]["DONE"] == 3500


async def test_a_task_reported_twice_in_one_drain_finishes_once():
    """A duplicate outcome (a rerun after a lost worker) never strands the others."""
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(1))
    async with Session([backend]):
        loop = asyncio.get_running_loop()
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(20)]
        for t in tasks:
            t.bind_future(loop.create_future())
        backend._accept(tasks)
        now = time.time()
        outcomes = [(t, "DONE", now, 0) for t in tasks]
        outcomes.insert(10, (tasks[3], "DONE", now, 0))
        backend._done.extend(outcomes)
        backend._drain()
        assert [t.state for t in tasks] == ["DONE"] * 20
        assert all(t.future.done() and t.future.result() is t for t in tasks)
        assert not backend._live


async def test_a_replaced_emit_gets_every_event_of_a_run():
    """Runs go to the session's stream as one record, unless ``emit`` was replaced after
    attach (a test, a tap): then the new ``emit`` gets each event, SUBMITTED to DONE (the
    session moves its tasks to SUBMITTED through their backend's life cycle)."""
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(2))
    async with Session([backend]) as session:
        events: list[tuple] = []
        backend.emit = events.append
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(50)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        for t in tasks:
            assert [e[2] for e in events if e[1] == t.uid] == [
                "SUBMITTED", "QUEUED", "RUNNING", "DONE"]


async def test_a_long_task_is_running_in_the_stream_before_it_ends():
    """RUNNING reaches the stream from the loop's drain: a worker that starts a task wakes
    it, so a long task shows RUNNING while it runs, with or without a run-taking observer."""
    for observed in (False, True):
        async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
            seen: list[tuple] = []
            session.subscribe(seen.extend)
            if observed:
                session.events.subscribe(lambda items: None, runs=True)
            slow = ComputeTask(function=sleep_then, args=(1.5,))
            await session.submit_tasks([slow])
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and \
                    session.get_statistics()["counts"].get("RUNNING") != 1:
                await asyncio.sleep(0.02)
            assert session.get_statistics()["counts"] == {"RUNNING": 1}, observed
            session.events.drain(5)
            assert (slow.uid, "RUNNING") in [(e[1], e[2]) for e in seen]
            assert not slow.future.done()
            await session.wait_tasks([slow])
