"""Every backend makes a running task visible on ``task.state`` while it runs.

The life cycle (``rhapsody_lab.api.lifecycle``) is the one writer of ``task.state``; each
backend reports a task's start, and a user polling ``t.state`` sees RUNNING before the
task ends. Dragon and vLLM check the same on their real runtimes (``test_dragon.py``,
``tests/inference/test_vllm_real.py``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend


@pytest.fixture(scope="module", autouse=True)
def _no_resource_tracker_left():
    """Process pools start multiprocessing's resource tracker; later modules check for
    leftover children, so end it if this module started it."""
    from multiprocessing import resource_tracker
    tracker = resource_tracker._resource_tracker
    running = tracker._pid is not None
    yield
    if not running and tracker._pid is not None:
        tracker._stop()


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


async def _seen_while_running(session: Session, task: ComputeTask, timeout: float = 30
                              ) -> list[str]:
    """The states a poller sees from submit until the task ends (deduplicated, in order)."""
    await session.submit_tasks([task])
    seen = [task.state]
    deadline = time.monotonic() + timeout
    while task.state not in ("DONE", "FAILED", "CANCELED"):
        assert time.monotonic() < deadline, seen
        if task.state != seen[-1]:
            seen.append(task.state)
        await asyncio.sleep(0.02)
    seen.append(task.state)
    return seen


@pytest.mark.parametrize("make", [
    pytest.param(lambda: ThreadPoolExecutor(2), id="threads"),
    pytest.param(lambda: ProcessPoolExecutor(2), id="processes"),
])
@pytest.mark.parametrize("kind", ["function", "executable"])
async def test_concurrent_task_is_running_while_it_runs(make, kind):
    backend = await ConcurrentExecutionBackend(make())
    async with Session([backend]) as session:
        task = ComputeTask(function=nap, args=(1.0,)) if kind == "function" else \
            ComputeTask(executable="/bin/sleep", arguments=["1"])
        seen = await _seen_while_running(session, task)
    assert "RUNNING" in seen and seen[-1] == "DONE", seen
    # never backwards: the order is the life cycle's
    order = ["NEW", "SUBMITTED", "QUEUED", "RUNNING", "DONE"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen


async def test_dask_task_is_running_while_it_runs():
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from rhapsody_lab.backends import DaskExecutionBackend
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        backend = await DaskExecutionBackend(cluster=cluster)
        async with Session([backend]) as session:
            seen = await _seen_while_running(session, ComputeTask(function=nap, args=(3.0,)))
    assert "RUNNING" in seen and seen[-1] == "DONE", seen
