"""NoopExecutionBackend: every task ends DONE without running, through the real engine."""

from __future__ import annotations

import pytest

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import BackendError


def _never_called():
    raise AssertionError("a noop backend must not run the function")


async def test_noop_completes_every_kind_without_running_it(tmp_path):
    from rhapsody_lab.backends import NoopExecutionBackend
    marker = tmp_path / "ran"
    tasks = [ComputeTask(function=_never_called) for _ in range(300)]
    tasks.append(ComputeTask(executable="/bin/sh", arguments=["-c", f"touch {marker}"]))
    tasks.append(AITask(prompt="hi", backend="noop"))
    async with Session([await NoopExecutionBackend()]) as session:
        futures = await session.submit_tasks(tasks)
        done = [await f for f in futures]
        stats = session.get_statistics()
    assert done == tasks
    assert not marker.exists()
    assert {t.state for t in tasks} == {"DONE"}
    assert all(t.return_value is True and t.stdout == "" and t.stderr == ""
               and t.exit_code == 0 for t in tasks)
    assert stats["counts"]["DONE"] == len(tasks)
    assert stats["summary"]["total_tasks"] == len(tasks)


async def test_noop_cancel_before_the_drain_wins_and_shutdown_refuses_more():
    from rhapsody_lab.backends.execution import NoopExecutionBackend
    backend = await NoopExecutionBackend.create(name="nothing")
    assert backend.name == "nothing" and await backend.state() == "RUNNING"
    async with Session([backend]) as session:
        a, b = ComputeTask(function=_never_called), ComputeTask(function=_never_called)
        await session.submit_tasks([a, b])
        assert await session.cancel_task(a) is True  # before the drain applied the record
        await session.wait_tasks([a, b])
        assert (a.state, b.state) == ("CANCELED", "DONE")
        assert a.return_value is None and await session.cancel_task(b) is False
    with pytest.raises(BackendError, match="shut"):
        await backend.submit_tasks([ComputeTask(function=_never_called)])


def test_noop_is_registered_at_rhapsody_paths():
    import rhapsody_lab
    from rhapsody_lab.backends import NoopExecutionBackend
    from rhapsody_lab.backends.execution import NoopExecutionBackend as ViaExecution
    from rhapsody_lab.backends.execution.noop import NoopExecutionBackend as ViaModule
    assert NoopExecutionBackend is ViaExecution is ViaModule
    assert rhapsody_lab.discover_backends()["noop"] is True
    assert isinstance(rhapsody_lab.get_backend("noop"), NoopExecutionBackend)
    assert rhapsody_lab.BackendRegistry.get_backend_class("noop") is NoopExecutionBackend
