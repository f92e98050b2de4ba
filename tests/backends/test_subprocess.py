"""Executables that end by a signal: the failure names the signal, on every backend."""

from __future__ import annotations

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import TaskExecutionError
from rhapsody_lab.backends import ConcurrentExecutionBackend


def _killed_by_own_signal() -> list[ComputeTask]:
    return [ComputeTask(executable="/bin/sh", arguments=["-c", "kill -9 $$"]),
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo oops >&2; kill -TERM $$"]),
            ComputeTask(executable="/bin/sh", arguments=["-c", "exit 3"])]


def _check(tasks: list[ComputeTask]) -> None:
    kill, term, three = tasks
    assert [t.state for t in tasks] == ["FAILED"] * 3
    assert kill.exit_code == -9 and term.exit_code == -15 and three.exit_code == 3
    for t, text in ((kill, "killed by signal 9 (SIGKILL)"),
                    (term, "killed by signal 15 (SIGTERM)")):
        assert text in t.stderr
        assert isinstance(t.exception, TaskExecutionError) and text in str(t.exception)
        assert t.exception.exit_code == t.exit_code
    assert "oops" in term.stderr  # the captured output is kept
    assert "signal" not in three.stderr and "exit code 3" in str(three.exception)


async def test_concurrent_names_the_signal_that_killed_an_executable():
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        tasks = _killed_by_own_signal()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=30)
        _check(tasks)


async def test_dask_names_the_signal_that_killed_an_executable():
    pytest.importorskip("distributed")
    from rhapsody_lab.backends import DaskExecutionBackend
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 2,
                                              "processes": False})
    async with Session([backend]) as session:
        tasks = _killed_by_own_signal()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
        _check(tasks)


def test_dragon_ranks_ended_by_a_signal_name_it():
    """The Dragon rank collector (no runtime needed): executable and function ranks."""
    from rhapsody_lab.backends._dragon_procs import _collect
    from rhapsody_lab.backends._dragon_spec import Plan
    exe = {"uid": "exe.1"}
    state = _collect(exe, Plan("executable_process", [{}], None), False, [["out\n"]],
                     [["half a line"]], [-9], False)
    assert state == "FAILED" and exe["exit_code"] == -9
    assert exe["stderr"] == "half a line\n[rhapsody_lab] killed by signal 9 (SIGKILL)\n"
    fn = {"uid": "fn.1"}
    state = _collect(fn, Plan("function_process", [{}], None), True, [[""]], [[""]], [-9],
                     False)
    assert state == "FAILED" and fn["exit_code"] == -9
    assert "process ended (killed by signal 9 (SIGKILL)) before returning" in fn["stderr"]
