"""A backend written the RHAPSODY way (subclass ``backends.base.BaseBackend``, implement its
seven abstract methods, report states through ``self._callback_func``) runs in a Session."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rhapsody_lab import ComputeTask, Session
from rhapsody_lab.api.adopted import AdoptedBackend
from rhapsody_lab.backends import ConcurrentExecutionBackend, DaskExecutionBackend
from rhapsody_lab.backends.base import BaseBackend
from rhapsody_lab.backends.constants import StateMapper

RHAPSODY_ABSTRACT = {"submit_tasks", "shutdown", "state", "task_state_cb",
                     "get_task_states_map", "build_task", "cancel_task"}


class AsyncioBackend(BaseBackend):
    """Runs each function task as an asyncio task on the loop (a user's own backend)."""

    def __init__(self, name: str = "user_asyncio", done: str = "DONE", failed: str = "FAILED",
                 canceled: str = "CANCELED", running: str = "RUNNING"):
        super().__init__(name=name)
        StateMapper.register_backend_tasks_states(self, done_state=done, failed_state=failed,
                                                  canceled_state=canceled,
                                                  running_state=running)
        self.states = {"DONE": done, "FAILED": failed, "CANCELED": canceled,
                       "RUNNING": running}
        self.jobs: dict[str, asyncio.Task] = {}
        self._backend_state = "INITIALIZED"  # its own attribute, as RHAPSODY's backends have

    async def submit_tasks(self, tasks: list[dict]) -> None:
        self._backend_state = "RUNNING"
        for task in tasks:
            self.jobs[task["uid"]] = asyncio.get_running_loop().create_task(self._run(task))

    async def _run(self, task: dict) -> None:
        task["state"] = self.states["RUNNING"]  # RHAPSODY's backends set it themselves too
        self._callback_func(task, self.states["RUNNING"])
        try:
            value = task["function"](*task.get("args", ()))
            if asyncio.iscoroutine(value):
                value = await value
        except asyncio.CancelledError:
            task["state"] = self.states["CANCELED"]
            self._callback_func(task, self.states["CANCELED"])
            raise
        except Exception as exc:
            task.update(exception=exc, stderr=repr(exc), exit_code=1)
            self._callback_func(task, self.states["FAILED"])
        else:
            task.update(return_value=value, stdout=str(value), exit_code=0)
            self._callback_func(task, self.states["DONE"])
        finally:
            self.jobs.pop(task["uid"], None)

    async def cancel_task(self, uid: str) -> bool:
        job = self.jobs.get(uid)
        if job is None:
            return False
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        return True

    async def shutdown(self) -> None:
        for uid in list(self.jobs):
            await self.cancel_task(uid)
        self._backend_state = "SHUTDOWN"

    def state(self) -> str:
        return self._backend_state

    def task_state_cb(self, task: dict, state: str) -> None:
        pass

    def get_task_states_map(self) -> StateMapper:
        return StateMapper(self)

    def build_task(self, task: dict) -> None:
        pass


async def _slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


def _boom() -> None:
    raise ValueError("boom")


def test_base_backend_declares_rhapsody_abstract_methods_and_ours_implement_them():
    assert BaseBackend.__abstractmethods__ == RHAPSODY_ABSTRACT
    with pytest.raises(TypeError):
        BaseBackend()
    for cls in (ConcurrentExecutionBackend, DaskExecutionBackend):
        assert issubclass(cls, BaseBackend)
    assert AsyncioBackend.__abstractmethods__ == frozenset()


async def test_user_backend_runs_tasks_through_a_session():
    user = AsyncioBackend()
    async with Session([user]) as session:
        adopted = session.backends["user_asyncio"]
        assert isinstance(adopted, AdoptedBackend) and adopted.inner is user
        assert user.is_attached and user.attached_to == [session.uid]
        ok = [ComputeTask(function=sum, args=([i, i],)) for i in range(3)]
        bad = ComputeTask(function=_boom)
        await session.submit_tasks([*ok, bad])
        await session.wait_tasks([*ok, bad], timeout=10)
        assert [t.state for t in ok] == ["DONE"] * 3
        assert [t.return_value for t in ok] == [0, 2, 4]
        assert bad.state == "FAILED" and isinstance(bad.exception, ValueError)
        with pytest.raises(ValueError, match="boom"):
            await bad
        assert await ok[1] is ok[1]
        session.events.flush()
        assert session.counts() == {"DONE": 3, "FAILED": 1}
        assert user.jobs == {}
    assert user.state() == "SHUTDOWN"


async def test_user_backend_with_its_own_state_names_is_translated():
    user = AsyncioBackend(name="renamed", done="COMPLETED", failed="ERROR",
                          canceled="ABORTED", running="ACTIVE")
    async with Session([user]) as session:
        task = ComputeTask(function=_slow, args=(0.01,))
        seen: list[str] = []
        session.backends["renamed"].register_callback(lambda t, s: seen.append(s))
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=10)
        assert task.state == "DONE" and task.return_value == "slept"
        assert seen == ["QUEUED", "RUNNING", "DONE"]


async def test_cancel_and_close_reach_the_user_backend():
    user = AsyncioBackend()
    session = Session([user])
    long, other, left = (ComputeTask(function=_slow, args=(s,)) for s in (30, 0.01, 30))
    await session.submit_tasks([long, other, left])
    await asyncio.sleep(0.05)
    assert long.state == "RUNNING"
    assert await session.cancel_task(long) is True
    assert long.state == "CANCELED"
    await session.wait_tasks([other], timeout=10)
    assert other.state == "DONE"
    await session.close()
    assert left.state == "CANCELED" and user.jobs == {} and user.state() == "SHUTDOWN"


async def test_a_state_reported_from_another_thread_reaches_the_loop():
    class Threaded(AsyncioBackend):
        async def submit_tasks(self, tasks: list[dict]) -> None:
            def work(task: dict) -> None:
                task["return_value"] = task["function"](*task.get("args", ()))
                self._callback_func(task, "DONE")
            for task in tasks:
                threading.Thread(target=work, args=(task,)).start()

    async with Session([Threaded(name="threaded")]) as session:
        task = ComputeTask(function=len, args=("abc",))
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=10)
        assert task.state == "DONE" and task.return_value == 3


async def test_a_refusing_user_backend_fails_only_its_tasks():
    class Refusing(AsyncioBackend):
        async def submit_tasks(self, tasks: list[dict]) -> None:
            raise RuntimeError("no room today")

    fine = ConcurrentExecutionBackend(name="fine", max_workers=1)
    async with Session([Refusing(name="refusing"), fine]) as session:
        refused = ComputeTask(function=len, args=("x",), backend="refusing")
        ok = ComputeTask(function=len, args=("xy",), backend="fine")
        await session.submit_tasks([refused, ok])
        await session.wait_tasks([refused, ok], timeout=10)
        assert refused.state == "FAILED" and "no room today" in refused.stderr
        assert ok.state == "DONE" and ok.return_value == 2
