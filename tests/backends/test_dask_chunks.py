"""Dask chunks (``backends/_dask_chunks.py``) on a real LocalCluster: small function tasks
travel in chunks, and each task keeps its own states, result, exception, retries, cancel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("distributed")

from dask.utils import key_split
from distributed import LocalCluster

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.backends import DaskExecutionBackend
from rhapsody_lab.backends._dask_chunks import (
    CHUNK_SECONDS,
    K_MAX,
    PROBE_WAIT,
    RAMP,
    ChunkFeeder,
    _Plan,
)


# -- task functions (module level: workers import them) --------------------------------
def square(n):
    return n * n


async def double_later(n):
    await asyncio.sleep(0.001)
    return n * 2


def boom(n):
    raise ValueError(f"boom {n}")


def flaky(path):
    """Raise on the first call for ``path``, succeed on the next."""
    if os.path.exists(path):
        return "second try"
    with open(path, "w"):
        pass
    raise RuntimeError(f"first try of {os.path.basename(path)}")


def chunk_key():
    from distributed import get_worker
    return get_worker().get_current_task()


def mark_nap(path, seconds):
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return seconds


def nap(seconds):
    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module", autouse=True)
def _no_resource_tracker_left():
    from rhapsody_lab.backends.dask import _resource_tracker_running, _stop_resource_tracker
    running = _resource_tracker_running()
    yield
    if not running:
        _stop_resource_tracker()


@pytest.fixture(scope="module")
def cluster():
    """A shared LocalCluster: 2 worker processes with 1 thread each."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as c:
        yield c


def _measured_tiny(backend: DaskExecutionBackend, fn) -> None:
    """Make the backend take ``fn`` for a function measured tiny (a load spike on the
    machine could make its first measured calls look long, and unchunked)."""
    backend._chunks._plans[id(fn)] = plan = _Plan(fn)
    plan.est, plan.kseen = 1e-6, K_MAX


def _mixed_batch(tmp) -> list[ComputeTask]:
    """Many small tasks with failures, coroutines and retries among them."""
    tasks = []
    for i in range(400):
        if i % 37 == 5:
            tasks.append(ComputeTask(function=boom, args=(i,)))
        elif i % 50 == 7:
            tasks.append(ComputeTask(function=double_later, args=(i,)))
        else:
            tasks.append(ComputeTask(function=square, args=(i,)))
    for i in range(60):  # retried once: succeed
        tasks.append(ComputeTask(function=flaky, args=(str(tmp / f"r{i}"),),
                                 task_backend_specific_kwargs={"retries": 1}))
    for i in range(20):  # no retry: fail
        tasks.append(ComputeTask(function=flaky, args=(str(tmp / f"n{i}"),)))
    tasks.append(ComputeTask(function=boom, args=(-1,),  # retried, fails every time
                             task_backend_specific_kwargs={"retries": 2}))
    return tasks


def _outcome(task) -> tuple:
    exc = task.exception
    return (task.state, task.return_value, task.stdout if task.state == "DONE" else None,
            task.exit_code, type(exc).__name__ if exc else None, str(exc) if exc else None,
            "Traceback" in (task.stderr or "") if task.state == "FAILED" else None)


async def _run(cluster, tasks, chunks: bool) -> tuple[list, dict, DaskExecutionBackend]:
    backend = DaskExecutionBackend(cluster=cluster, chunks=chunks)
    events: list = []
    async with Session(backends=[backend]) as session:
        session.subscribe(events.extend, inline=True)
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=120)
        session.events.flush(limit=None)
    by_uid: dict = {}
    for t, uid, state, _b, slot in events:
        by_uid.setdefault(uid, []).append((state, t, slot))
    return [_outcome(t) for t in tasks], by_uid, backend


async def test_chunked_and_unchunked_paths_give_the_same_outcomes(cluster, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain, _, _ = await _run(cluster, _mixed_batch(tmp_path / "a"), chunks=False)
    tasks = _mixed_batch(tmp_path / "b")
    chunked, events, backend = await _run(cluster, tasks, chunks=True)
    assert backend._chunks.chunks_sent > 0
    assert backend._chunks.tasks_chunked > backend._chunks.chunks_sent  # really grouped
    assert chunked == plain
    states = [o[0] for o in chunked]
    assert states.count("FAILED") == 11 + 20 + 1 and states.count("DONE") == len(tasks) - 32
    assert chunked[6][1] == 36 and chunked[7][1] == 14  # square(6), double_later(7)
    assert {o[1] for o in chunked[400:460]} == {"second try"}
    assert chunked[5][4:6] == ("ValueError", "boom 5")  # a failing task fails alone
    assert chunked[-1][4:6] == ("ValueError", "boom -1")
    # each task its own RUNNING and end, with the worker's times and address
    workers = set(cluster.scheduler_info["workers"])
    for task in tasks:
        seq = events[task.uid]
        assert [s for s, _, _ in seq] == ["SUBMITTED", "QUEUED", "RUNNING", task.state]
        (_, t_run, slot_run), (_, t_end, slot_end) = seq[2], seq[3]
        assert t_run <= t_end and slot_run == slot_end and slot_end in workers


async def test_chunks_are_named_dask_tasks_of_the_function(cluster):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        tasks = [ComputeTask(function=chunk_key) for _ in range(500)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
    keys = [t.return_value for t in tasks]
    assert all(t.state == "DONE" for t in tasks)
    assert {key_split(k) for k in keys} == {"chunk_key"}  # the dashboard's task group
    assert len(set(keys)) < len(keys) / 4  # many tasks per Dask task
    assert backend._chunks.tasks_chunked >= 400


async def test_long_tasks_go_one_per_dask_task(cluster):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        tasks = [ComputeTask(function=nap, args=(0.1,)) for _ in range(12)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
    assert [t.state for t in tasks] == ["DONE"] * 12
    assert backend._chunks.chunks_sent == 0


async def test_cancel_in_a_chunk_and_running_while_its_chunk_runs(cluster, tmp_path):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        _measured_tiny(backend, mark_nap)  # so the next tasks go in chunks, at once
        marks = [tmp_path / f"m{i}" for i in range(40)]
        tasks = [ComputeTask(function=mark_nap, args=(str(m), 0.2)) for m in marks]
        await session.submit_tasks(tasks)
        last = tasks[-1]
        assert await session.cancel_task(last.uid) is True
        deadline = time.monotonic() + 10
        while not marks[0].exists():
            assert time.monotonic() < deadline, "the first chunk never started"
            await asyncio.sleep(0.01)
        assert await session.cancel_task(tasks[0].uid) is False  # started: runs to its end
        deadline = time.monotonic() + 6  # a running chunk shows its tasks RUNNING
        while not any(t.state == "RUNNING" and not m.exists()  # before their own start
                      for t, m in zip(tasks, marks, strict=True)):
            assert time.monotonic() < deadline, "no task of a running chunk is RUNNING"
            await asyncio.sleep(0.02)
        await session.wait_tasks(tasks, timeout=60)
    assert backend._chunks.chunks_sent == 4  # chunks of 10, a fair share per slot
    assert last.state == "CANCELED" and not marks[-1].exists()  # it never ran
    assert [t.state for t in tasks[:-1]] == ["DONE"] * 39
    assert tasks[0].return_value == 0.2


async def test_a_chunk_started_by_dask_skips_tasks_canceled_meanwhile(cluster, tmp_path):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        _measured_tiny(backend, mark_nap)
        marks = [tmp_path / f"m{i}" for i in range(8)]
        tasks = [ComputeTask(function=mark_nap, args=(str(m), 0.2)) for m in marks]
        await session.submit_tasks(tasks)  # chunks of 2: each worker runs one, then one
        deadline = time.monotonic() + 10
        while not marks[0].exists():
            assert time.monotonic() < deadline, "the first chunk never started"
            await asyncio.sleep(0.01)
        assert await session.cancel_task(tasks[1].uid) is True  # its chunk is running
        await session.wait_tasks(tasks, timeout=60)
    assert backend._chunks.chunks_sent == 4  # chunks of 2
    assert tasks[1].state == "CANCELED" and not marks[1].exists()
    assert [t.state for i, t in enumerate(tasks) if i != 1] == ["DONE"] * 7


def test_chunks_option_is_checked():
    with pytest.raises(SessionError, match="chunks must be True"):
        DaskExecutionBackend(chunks="yes")


async def test_tasks_of_a_new_function_submitted_apart_start_at_once(cluster):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        first = ComputeTask(function=nap, args=(2.0,))
        await session.submit_tasks([first])
        await asyncio.sleep(0.1)
        second = ComputeTask(function=nap, args=(2.0,))  # not held for the first's result
        await session.submit_tasks([second])
        t0 = time.monotonic()
        while second.uid not in backend._futs:  # handed to Dask: a probe slot was free
            assert time.monotonic() - t0 < PROBE_WAIT / 2, "held back by the probe"
            await asyncio.sleep(0.01)
        await session.wait_tasks([first, second], timeout=30)
    assert [first.state, second.state] == ["DONE", "DONE"]


# -- the sizing rules, beside the real runs above (no runtime: a recorder takes the sends)
class _Fut:
    def __init__(self) -> None:
        self.status = "pending"


class _Recorder(ChunkFeeder):
    """A ``ChunkFeeder`` whose sends are recorded as (tasks, k) instead of reaching Dask."""

    def __init__(self, slots: int) -> None:
        super().__init__(SimpleNamespace(_nthreads=slots, _live={}))
        self.sent: list[tuple[int, int]] = []
        self.made: list[_Fut] = []

    def finish_all(self) -> None:
        for fut in self.made:
            fut.status = "finished"

    def submit(self, tasks: list) -> None:
        for task in tasks:
            self._backend._live[task["uid"]] = task
        self.add(tasks, ())
        self.release()

    def _send(self, g, tasks, k):
        self.sent.append((len(tasks), k))
        futs = [_Fut() for _ in range(-(-len(tasks) // k))]
        self.made.extend(futs)
        return futs


def test_a_new_tiny_function_is_probed_then_ramped_then_sent_whole():
    feeder = _Recorder(slots=2)
    feeder.submit([ComputeTask(function=square, args=(i,)) for i in range(10_000)])
    assert feeder.sent == [(4, 1)]  # the probe: 2 x slots alone, the rest held
    for k in (1, RAMP, RAMP * RAMP):
        feeder.release()  # nothing more while 2 x slots are in flight
        feeder.finish_all()
        feeder.measure(square, 2e-6, k)
        feeder.release()
    assert feeder.sent == [(4, 1), (4 * RAMP, RAMP), (4 * RAMP * RAMP, RAMP * RAMP),
                           (10_000 - 4 - 4 * RAMP - 4 * RAMP * RAMP, K_MAX)]
    assert not feeder._groups  # the rest went at once


def test_a_measured_function_goes_at_once_in_fair_shares_and_long_ones_alone():
    feeder = _Recorder(slots=4)
    feeder._plans[id(square)] = plan = _Plan(square)
    plan.est, plan.kseen = 1e-6, K_MAX
    feeder.submit([ComputeTask(function=square, args=(i,)) for i in range(100)])
    assert feeder.sent == [(100, 13)]  # ceil(100 / (2 x 4)): every slot gets work
    plan.est = 2 * CHUNK_SECONDS  # long tasks: one Dask task each
    feeder.submit([ComputeTask(function=square, args=(i,)) for i in range(100)])
    assert feeder.sent[-1] == (100, 1)
    plan.est = CHUNK_SECONDS / 10.5  # chunks of about CHUNK_SECONDS of work
    feeder.submit([ComputeTask(function=square, args=(i,)) for i in range(1000)])
    assert feeder.sent[-1] == (1000, 10)


def test_a_probe_without_results_sends_the_rest_alone():
    feeder = _Recorder(slots=1)
    feeder.submit([ComputeTask(function=nap, args=(1,)) for _ in range(10)])
    assert feeder.sent == [(2, 1)]
    assert feeder.wait_time() <= PROBE_WAIT
    feeder._plans[id(nap)].probe_at -= PROBE_WAIT + 0.1
    feeder.release()
    assert feeder.sent[-1] == (8, 1) and not feeder._groups


async def test_tasks_with_large_arguments_travel_alone(cluster):
    backend = DaskExecutionBackend(cluster=cluster)
    async with Session(backends=[backend]) as session:
        blob = b"x" * 200_000
        tasks = [ComputeTask(function=len, args=(blob,)) for _ in range(30)]
        tasks += [ComputeTask(function=len, args=([1] * 50_000,)) for _ in range(30)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
    assert [t.return_value for t in tasks] == [200_000] * 30 + [50_000] * 30
    assert backend._chunks.tasks_chunked == 0


def record_run(log_dir, i, victim):
    """Count a run of task ``i``; the victim's first run records its pid and hangs."""
    with open(os.path.join(log_dir, str(i)), "a") as f:
        f.write("x")
    if i != victim:
        return i
    marker = os.path.join(log_dir, "marker")
    if os.path.exists(marker):
        return "rerun"
    with open(marker, "w"):
        pass
    with open(os.path.join(log_dir, "pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return "first"


async def test_a_worker_dying_mid_chunk_reruns_the_chunk(tmp_path):
    """Dask reruns the dead worker's chunk elsewhere: every task ends DONE with its own
    result, and a task of that chunk that had finished ran twice (the README says so)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        backend = DaskExecutionBackend(cluster=cluster)
        async with Session(backends=[backend]) as session:
            _measured_tiny(backend, record_run)
            tasks = [ComputeTask(function=record_run, args=(str(tmp_path), i, 3))
                     for i in range(8)]  # chunks of 2: [2, 3] holds the victim
            await session.submit_tasks(tasks)
            deadline = time.monotonic() + 30
            while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
                assert time.monotonic() < deadline, "the victim never started"
                await asyncio.sleep(0.05)
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
            await session.wait_tasks(tasks, timeout=90)
        assert backend._chunks.chunks_sent == 4
        assert [t.state for t in tasks] == ["DONE"] * 8
        assert [t.return_value for t in tasks] == [0, 1, 2, "rerun", 4, 5, 6, 7]
        assert (tmp_path / "2").read_text() == "xx"  # finished in the chunk, then rerun
        assert (tmp_path / "3").read_text() == "xx"
