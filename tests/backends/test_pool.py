"""A worker process that dies under a real ProcessPoolExecutor fails its own task only."""

from __future__ import annotations

import os
import signal
import time
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


class _Echo:
    """What a ``_PoolBreaker`` becomes in the worker: returns its argument."""

    def __call__(self, i: int) -> int:
        return i


class _PoolBreaker:
    """A task function whose pickling kills every worker of ``pool`` and waits for the break.

    The feeder pickles a function while it builds a batch, so this breaks the pool between
    two batches of one ``send``: the batches before it are in the pool, it and the ones
    after it are not yet.
    """

    def __init__(self, backend: ConcurrentExecutionBackend):
        self.backend = backend
        self.fired = False

    def __call__(self, i: int) -> int:  # never runs here: the worker gets an _Echo
        return i

    def __reduce__(self):
        if not self.fired:
            self.fired = True
            pool = self.backend._feeder.executor
            for proc in list(pool._processes.values()):
                os.kill(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not pool._broken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pool._broken, "the killed pool never noticed"
        return (_Echo, ())


async def test_a_pool_broken_between_two_batches_loses_no_task():
    """Tasks not yet in the pool when it broke go to its replacement; none fails."""
    backend = ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=2))
    breaker = _PoolBreaker(backend)
    async with Session([backend]) as session:
        # a short backlog goes task by task: one send of ten single-task batches
        tasks = [ComputeTask(function=maybe_die, args=(i, {})) for i in range(4)]
        tasks += [ComputeTask(function=breaker, args=(i,)) for i in range(4, 10)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=180)
    assert breaker.fired
    states = [t.state for t in tasks]
    assert states == ["DONE"] * 10, [(i, t.state, t.get("stderr")) for i, t in enumerate(tasks)
                                      if t.state != "DONE"][:3]
    assert [t.return_value for t in tasks] == list(range(10))


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
