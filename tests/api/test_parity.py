"""RHAPSODY 0.6.0 parity, issue 22 point 4: names, registry, logging, validation wording,
plain dict tasks, one session per backend."""

from __future__ import annotations

import io
import logging

import pytest

import rhapsody_lab
from rhapsody_lab.api.errors import SessionError


# -- names (point 5) and the registry (point 6) -------------------------------------------
def test_dragon_backend_is_named_as_in_rhapsody_with_the_v3_alias():
    from rhapsody_lab.backends import DragonExecutionBackend, DragonExecutionBackendV3
    from rhapsody_lab.backends.execution import DragonExecutionBackend as ViaExecution
    assert DragonExecutionBackend is DragonExecutionBackendV3 is ViaExecution
    assert DragonExecutionBackend.__name__ == "DragonExecutionBackend"
    registry = rhapsody_lab.BackendRegistry
    assert registry.get_backend_class("dragon") is DragonExecutionBackend
    assert registry.get_backend_class("dragon_v3") is DragonExecutionBackend


def test_backend_registry_at_rhapsody_paths_and_behaviour():
    from rhapsody_lab.backends import BackendRegistry as ViaBackends
    from rhapsody_lab.backends.base import BaseBackend
    from rhapsody_lab.backends.discovery import BackendRegistry as ViaDiscovery
    from rhapsody_lab.backends.discovery import discover_backends, get_backend
    registry = rhapsody_lab.BackendRegistry
    assert registry is ViaBackends is ViaDiscovery
    assert get_backend is rhapsody_lab.get_backend
    assert discover_backends is rhapsody_lab.discover_backends
    names = registry.list_backends()
    assert {"concurrent", "dask", "dragon", "noop", "vllm"} <= set(names)
    with pytest.raises(ValueError, match=r"Backend 'nonexistent' not found\. Available: "):
        registry.get_backend_class("nonexistent")
    saved = dict(registry._backends)
    try:
        registry.register_backend("by_path", "rhapsody_lab.backends.base.BaseBackend")
        registry.register_backend("missing", "no_such_module.Backend")
        assert {"by_path", "missing"} <= set(registry.list_backends())
        assert registry.get_backend_class("by_path") is BaseBackend
        found = rhapsody_lab.discover_backends()
        assert found["missing"] is False and found["concurrent"] is True
        with pytest.raises(ImportError, match="no_such_module"):
            registry.get_backend_class("missing")
        with pytest.raises(SessionError, match="dotted import path"):
            registry.register_backend("bad", "NoDots")
        with pytest.raises(SessionError, match="name must be a non-empty string"):
            registry.register_backend("", BaseBackend)
    finally:
        registry._backends.clear()
        registry._backends.update(saved)


def test_backend_registry_reads_a_replaced_table():
    """RHAPSODY's tests save ``_backends`` and assign it back; the registry must follow."""
    registry = rhapsody_lab.BackendRegistry
    saved = registry._backends
    try:
        registry._backends = {"only": "rhapsody_lab.backends.noop.NoopExecutionBackend"}
        assert registry.list_backends() == ["only"]
        assert rhapsody_lab.get_backend("only").name == "noop"
    finally:
        registry._backends = saved


# -- enable_logging (point 6) -------------------------------------------------------------
def test_enable_logging_configures_the_package_loggers():
    from rhapsody_lab.logger import enable_logging
    assert enable_logging is rhapsody_lab.enable_logging
    child = logging.getLogger("rhapsody_lab.api.backend")
    ours = logging.getLogger("rhapsody_lab")
    saved = (ours.level, list(ours.handlers), ours.propagate, child.level,
             logging.getLogger().handlers[:], logging.getLogger().level)
    stream = io.StringIO()
    try:
        rhapsody_lab.enable_logging(logging.DEBUG, stream=stream)
        assert child.level == logging.DEBUG and ours.propagate is False
        child.debug("hello from the engine")
        line = stream.getvalue()
        assert line.count("hello from the engine") == 1  # no duplicate through the root
        assert "| DEBUG    | [rhapsody_lab.api.backend] |" in line
        rhapsody_lab.enable_logging("warning", format_string="%(message)s", stream=stream)
        assert ours.level == logging.WARNING
        with pytest.raises(SessionError, match="level"):
            rhapsody_lab.enable_logging("loud")
    finally:
        ours.setLevel(saved[0])
        ours.handlers[:] = saved[1]
        ours.propagate = saved[2]
        child.setLevel(saved[3])
        root = logging.getLogger()
        root.handlers[:] = saved[4]
        root.setLevel(saved[5])


# -- validation wording (point 4) ---------------------------------------------------------
def test_compute_task_both_or_neither_carries_rhapsody_wording_and_our_fix():
    from rhapsody_lab.api import ComputeTask
    from rhapsody_lab.api.errors import TaskValidationError
    with pytest.raises(TaskValidationError) as err:
        ComputeTask()
    assert "requires either 'executable' or 'function'" in str(err.value)
    assert "function=<callable> or executable=<path>" in str(err.value)
    assert err.value.field == "function"
    with pytest.raises(TaskValidationError) as err:
        ComputeTask(function=len, executable="/bin/true")
    assert "cannot have both 'executable' and 'function'" in str(err.value)
    assert err.value.field == "executable"


def test_ai_task_needs_a_model_an_endpoint_or_a_backend():
    from rhapsody_lab.api import AITask
    from rhapsody_lab.api.errors import TaskValidationError
    with pytest.raises(TaskValidationError) as err:
        AITask(prompt="test")
    assert "AITask requires either 'model', 'inference_endpoint', or 'backend'" in str(
        err.value)
    assert "backend=" in str(err.value) and err.value.field == "model"
    for target in ({"model": "m"}, {"inference_endpoint": "http://h:8000/v1"},
                   {"backend": "vllm"}):
        assert AITask(prompt="test", **target).prompt == "test"
    with pytest.raises(TaskValidationError, match="temperature"):  # a bad value is named first
        AITask(prompt="test", temperature=9)
    with pytest.raises(TypeError, match="needs a prompt"):  # RHAPSODY: a required argument
        AITask(model="m")
    with pytest.raises(TaskValidationError, match="needs a prompt"):
        AITask(model="m")
    assert "_future" in AITask(prompt="p", model="m")._INTERNAL_ATTRS


# -- plain dict tasks (point 3) -----------------------------------------------------------
def _add(a, b):
    return a + b


async def test_submit_tasks_takes_plain_dicts_mixed_with_tasks_and_updates_them():
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    obj = ComputeTask(executable="/bin/echo", arguments=["object"])
    exe = {"uid": "dict_task_1", "executable": "/bin/echo", "arguments": ["Dict", "task"]}
    fn = {"function": _add, "args": (2, 3)}  # no uid: one is given, written back
    bad = {"uid": "dict_fail", "executable": "/bin/sh", "arguments": ["-c", "exit 4"]}
    tasks = [obj, exe, fn, bad]
    async with Session([ConcurrentExecutionBackend(max_workers=2)]) as session:
        futures = await session.submit_tasks(tasks)
        assert fn["uid"].startswith("task.") and exe["backend"] == "concurrent"
        results = await session.wait_tasks(tasks)
        assert results == tasks
        assert await futures[1] is exe and await futures[0] is obj
        with pytest.raises(rhapsody_lab.TaskExecutionError, match="exit code 4"):
            await futures[3]
        with pytest.raises(SessionError, match="already submitted"):
            await session.submit_tasks([exe])  # the same dict again: it is DONE now
        assert await session.cancel_task(exe) is False  # finished: nothing to cancel
    assert (exe["state"], exe["stdout"], exe["exit_code"]) == ("DONE", "Dict task\n", 0)
    assert (fn["state"], fn["return_value"], fn["stdout"]) == ("DONE", 5, "5")
    assert (bad["state"], bad["exit_code"]) == ("FAILED", 4)
    assert obj.state == "DONE" and type(exe) is dict


async def test_a_bad_dict_refuses_the_whole_call_naming_the_problem():
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.api.errors import TaskValidationError
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    good = ComputeTask(function=_add, args=(1, 1))
    async with Session([ConcurrentExecutionBackend(max_workers=1)]) as session:
        with pytest.raises(TaskValidationError, match="cannot tell the task type"):
            await session.submit_tasks([good, {"uid": "x", "arguments": ["a"]}])
        with pytest.raises(TaskValidationError, match="tasks\\[1\\] \\(a dict\\)"):
            await session.submit_tasks([good, {"function": _add, "bogus": 1, 2: 3}])
        with pytest.raises(SessionError, match="was not submitted"):
            await session.wait_tasks([{"uid": "never", "executable": "/bin/true"}])
        assert good.state == "NEW" and good.future is None


# -- one session per backend (point 7) ----------------------------------------------------
async def test_add_backend_refuses_a_backend_of_another_session():
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    backend = ConcurrentExecutionBackend(max_workers=1)
    assert backend.is_attached is False and backend.attached_to == []
    first = Session([backend], uid="first")
    first.add_backend(backend)  # the same session again: nothing happens
    assert backend.is_attached and backend.attached_to == ["first"]
    with pytest.raises(SessionError, match="already belongs to session first") as err:
        Session([backend], uid="second")
    assert "create a new backend" in str(err.value)
    other = Session(uid="third")
    with pytest.raises(SessionError, match="already belongs to session first"):
        other.add_backend(backend)
    assert other.backends == {}
    async with first:  # the owner still works
        t = ComputeTask(function=_add, args=(1, 2))
        await first.submit_tasks([t])
        assert (await t).return_value == 3


# -- what RHAPSODY's own tests showed (point 8) ------------------------------------------
async def test_task_state_manager_resolves_futures_from_backend_callbacks():
    from rhapsody_lab.api import ComputeTask, TaskStateManager
    from rhapsody_lab.api.errors import TaskExecutionError
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    manager = TaskStateManager()
    ok = ComputeTask(executable="/bin/echo", arguments=["hi"])
    bad = ComputeTask(executable="/bin/sh", arguments=["-c", "exit 2"])
    boom = ComputeTask(function=int, args=("x",))
    async with ConcurrentExecutionBackend(max_workers=2) as backend:
        backend.register_callback(manager.update_task)
        futures = [manager.get_wait_future(t.uid, t) for t in (ok, bad, boom)]
        await backend.submit_tasks([ok, bad, boom])
        assert await futures[0] is ok and ok.stdout == "hi\n"
        with pytest.raises(TaskExecutionError) as err:
            await futures[1]
        assert err.value.exit_code == 2
        with pytest.raises(ValueError):
            await futures[2]
    done = manager.get_wait_future(ok.uid, ok)  # asked after the end: resolved at once
    assert done.done() and done.result() is ok


def test_inference_backends_at_rhapsody_paths():
    from rhapsody_lab.backends import DragonVllmInferenceBackend
    from rhapsody_lab.backends.ai import DragonVllmInferenceBackend as ViaAi
    from rhapsody_lab.backends.ai.vllm import DragonVllmInferenceBackend as ViaModule
    assert DragonVllmInferenceBackend is ViaAi is ViaModule


def test_task_states_enum_and_data_linking_flags():
    from rhapsody_lab.api import ComputeTask
    from rhapsody_lab.backends import BaseBackend, ConcurrentExecutionBackend
    from rhapsody_lab.backends.constants import TasksMainStates
    assert TasksMainStates.DONE.value == "DONE" and TasksMainStates("FAILED").name == "FAILED"
    for cls in (BaseBackend, ConcurrentExecutionBackend):
        assert cls.supports_implicit_data_linking is False
        assert cls.supports_explicit_data_linking is False
    src, dst = ComputeTask(function=len), ComputeTask(function=len)
    before = (dict(src), dict(dst))
    backend = ConcurrentExecutionBackend(max_workers=1)
    assert backend.link_explicit_data_deps(src_task=src, dst_task=dst, file_name="x",
                                           file_path="/tmp/x") is None
    assert backend.link_implicit_data_deps(src, dst) is None
    assert (dict(src), dict(dst)) == before


async def test_every_backend_has_rhapsody_create_factory():
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    backend = await ConcurrentExecutionBackend.create(max_workers=1, name="made")
    try:
        assert backend.name == "made" and await backend.state() == "RUNNING"
    finally:
        await backend.shutdown()
