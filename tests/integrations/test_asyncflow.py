"""RADICAL AsyncFlow runs its workflows on rhapsody_lab backends as on RHAPSODY's.

AsyncFlow (``radical.asyncflow`` on PyPI) takes a backend object and uses RHAPSODY's
backend protocol on it: ``attached_to``/``is_attached``/``_work_dir``, the task-state map
(``get_task_states_map().terminal_states``), ``register_callback``, plain-dict tasks
handed to ``submit_tasks``, the data-linking flags. Real AsyncFlow, real backends.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from rhapsody_lab.api import Session
from rhapsody_lab.api.state_map import StateMapper, TasksMainStates
from rhapsody_lab.backends import ConcurrentExecutionBackend

asyncflow = pytest.importorskip(
    "radical.asyncflow", reason="radical.asyncflow is not installed (the asyncflow extra)")
WorkflowEngine = asyncflow.WorkflowEngine


async def _diamond(flow):
    """One workflow: a -> (b, c) -> d, results passed along by AsyncFlow."""
    @flow.function_task
    async def source():
        return 3

    @flow.function_task
    async def square(x):
        return x * x

    @flow.function_task
    async def plus_one(x):
        return x + 1

    @flow.function_task
    async def join(_a, b, c):
        return b + c

    a = source()
    return await join(a, square(a), plus_one(a))


def _pid() -> int:
    return os.getpid()


async def test_workflows_on_the_thread_backend(tmp_path):
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(4))
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    try:
        assert backend.is_attached and backend.attached_to == [flow.uid]
        assert backend._work_dir == os.path.join(flow.work_dir, flow.uid)
        results = await asyncio.gather(*(_diamond(flow) for _ in range(32)))
        assert results == [9 + 4] * 32

        @flow.executable_task
        async def greet():
            return "/bin/echo hello from asyncflow"

        out = await greet()
        assert out.strip() == "hello from asyncflow"
    finally:
        await flow.shutdown()


async def test_a_failing_task_fails_its_workflow_only(tmp_path):
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(2))
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    try:
        @flow.function_task
        async def broken():
            raise ValueError("bad input 7")

        @flow.executable_task
        async def missing():
            return "/no/such/program --flag"

        results = await asyncio.gather(broken(), missing(), _diamond(flow),
                                       return_exceptions=True)
        assert isinstance(results[0], Exception) and "bad input 7" in str(results[0])
        assert isinstance(results[1], Exception)
        assert results[2] == 13
    finally:
        await flow.shutdown()


async def test_function_tasks_on_the_process_backend(tmp_path):
    backend = await ConcurrentExecutionBackend(ProcessPoolExecutor(2))
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    try:
        @flow.function_task
        async def where():
            return _pid()

        pids = set(await asyncio.gather(*(where() for _ in range(8))))
        assert os.getpid() not in pids  # they ran in the pool's processes
        assert await _diamond(flow) == 13
    finally:
        await flow.shutdown()


async def test_workflows_on_the_dask_backend(tmp_path):
    pytest.importorskip("distributed", reason="distributed is not installed (dask extra)")
    from rhapsody_lab.backends import DaskExecutionBackend

    # RHAPSODY's positional form: the cluster's resources first
    backend = await DaskExecutionBackend({"n_workers": 2, "threads_per_worker": 1})
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    try:
        assert backend.name == "dask"
        results = await asyncio.gather(*(_diamond(flow) for _ in range(8)))
        assert results == [13] * 8
    finally:
        await flow.shutdown()


def test_the_state_map_is_rhapsodys():
    backend = ConcurrentExecutionBackend()
    mapper = backend.get_task_states_map()
    assert mapper.terminal_states == ("DONE", "FAILED", "CANCELED")
    assert mapper.RUNNING == "RUNNING"
    assert mapper.to_main_state("FAILED") is TasksMainStates.FAILED
    assert mapper.get_backend_state("DONE") == "DONE"
    with pytest.raises(ValueError, match="not registered"):
        StateMapper("no-such-backend")
    StateMapper.register_backend_tasks_states("slurmish", done_state="COMPLETED",
                                              failed_state="ERR", canceled_state="CANCELLED",
                                              running_state="R")
    other = StateMapper("slurmish")
    assert other.terminal_states == ("COMPLETED", "ERR", "CANCELLED")
    assert other.to_main_state("R") is TasksMainStates.RUNNING
    assert not backend.supports_implicit_data_linking
    assert not backend.supports_explicit_data_linking
    assert backend.link_explicit_data_deps(file_name="x") is None


async def test_a_session_marks_its_backends_attached(tmp_path):
    backend = ConcurrentExecutionBackend()
    assert not backend.is_attached and backend.attached_to == []
    async with Session([backend], work_dir=str(tmp_path)) as session:
        assert backend.is_attached and backend.attached_to == [session.uid]
