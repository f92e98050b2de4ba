"""A worker process that dies under a real ProcessPoolExecutor fails its own task only."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import BackendError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.backends._exits import describe_exit


def maybe_die(i: int, exits: dict) -> int:
    """Return ``i``, unless ``exits`` says how this one ends its worker process."""
    how = exits.get(i)
    if how == "exit":
        os._exit(1)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return i


async def _backlog(n: int, exits: dict) -> list:
    backend = ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2))
    async with Session([backend]) as session:
        tasks = [ComputeTask(function=maybe_die, args=(i, exits)) for i in range(n)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=180)
        after = [ComputeTask(function=maybe_die, args=(i, {})) for i in range(5)]
        await session.submit_tasks(after)  # the backend is usable afterwards
        await session.wait_tasks(after, timeout=60)
        assert [t.return_value for t in after] == list(range(5))
    return tasks


def _check(tasks: list, culprits: dict) -> None:
    failed = {i for i, t in enumerate(tasks) if t.state == "FAILED"}
    assert failed == set(culprits), f"failed: {sorted(failed)}, expected {sorted(culprits)}"
    for i, t in enumerate(tasks):
        if i in culprits:
            continue
        assert t.state == "DONE" and t.return_value == i, (i, t.state, t.get("stderr"))
    for i, how in culprits.items():
        t = tasks[i]
        exc = t.exception
        assert isinstance(exc, BackendError), exc
        # its own uid, in both the exception and the task's stderr, and no other task's
        assert t["uid"] in str(exc) and t["uid"] in t.stderr
        others = [u["uid"] for j, u in enumerate(tasks) if j != i]
        assert not [u for u in others if f"task {u} " in str(exc)]
        assert "worker process" in str(exc) and "died" in str(exc)
        code = 1 if how == "exit" else -signal.SIGKILL
        assert describe_exit(code) in str(exc) and t.exit_code == code


async def test_one_crashing_task_in_a_2000_task_backlog_fails_alone():
    culprits = {777: "exit"}
    _check(await _backlog(2000, culprits), culprits)


async def test_two_crashing_tasks_fail_each_with_its_own_cause():
    culprits = {150: "exit", 1234: "kill"}
    _check(await _backlog(2000, culprits), culprits)


async def test_two_crashing_tasks_in_one_batch():
    culprits = {40: "kill", 41: "exit"}  # neighbours: lost in the same pool work item
    _check(await _backlog(300, culprits), culprits)


def test_describe_exit_names_signals():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-15) == "killed by signal 15 (SIGTERM)"
    assert describe_exit(None) == "exit status unknown"


def test_the_pool_feeder_does_not_import_the_backend():
    """No _pool <-> concurrent cycle: the feeder stands on api and its own helpers."""
    import subprocess
    import sys
    code = ("import sys, rhapsody_lab.backends._pool; "
            "assert 'rhapsody_lab.backends.concurrent' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
