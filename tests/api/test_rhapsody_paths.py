"""RHAPSODY 0.6.0's public module paths exist under ``rhapsody_lab`` with its names.

Code written for RHAPSODY runs with ``rhapsody`` -> ``rhapsody_lab`` in its imports, deep
imports included; each path is a thin re-export of our own modules, not a second layout.
"""

from __future__ import annotations

import importlib

import pytest

#: module path (after ``rhapsody.``) -> public names RHAPSODY 0.6.0 gives it
PATHS: dict[str, tuple[str, ...]] = {
    "api": ("BaseTask", "ComputeTask", "AITask", "Session", "TaskStateManager", "RhapsodyError",
            "BackendError", "TaskValidationError", "TaskExecutionError", "SessionError",
            "ResourceError"),
    "api.session": ("Session", "TaskStateManager"),
    "api.task": ("BaseTask", "ComputeTask", "AITask"),
    "api.errors": ("RhapsodyError", "BackendError", "TaskValidationError",
                   "TaskExecutionError", "SessionError", "ResourceError"),
    "backends": ("BaseBackend", "Session", "StateMapper", "TasksMainStates", "get_backend",
                 "discover_backends", "ConcurrentExecutionBackend"),
    "backends.base": ("BaseBackend",),
    "backends.constants": ("StateMapper", "TasksMainStates", "BackendMainStates"),
    "backends.execution": ("ConcurrentExecutionBackend",),
    "backends.execution.concurrent": ("ConcurrentExecutionBackend",),
    "backends.data": ("DataBackend", "RedisDataBackend", "DragonDataBackend"),
    "backends.data.base": ("DataBackend",),
    "backends.data.redis": ("RedisDataBackend",),
    # radical.pilot is imported only when the backend starts
    "backends.execution.radical_pilot": ("RadicalExecutionBackend",),
}

#: paths whose runtime library is optional (importing them needs it, as in RHAPSODY)
OPTIONAL: dict[str, tuple[str, str]] = {
    "backends.execution.dask_parallel": ("distributed", "DaskExecutionBackend"),
    "backends.execution.dragon": ("dragon", "DragonExecutionBackend"),
    "backends.ai.vllm": ("aiohttp", "DragonVllmInferenceBackend"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_public_path_has_rhapsodys_names(path):
    module = importlib.import_module(f"rhapsody_lab.{path}")
    missing = [n for n in PATHS[path] if not hasattr(module, n)]
    assert missing == [], f"rhapsody_lab.{path} lacks {missing}"


@pytest.mark.parametrize("path", sorted(OPTIONAL))
def test_optional_backend_paths(path):
    library, name = OPTIONAL[path]
    pytest.importorskip(library, reason=f"{library} is not installed")
    module = importlib.import_module(f"rhapsody_lab.{path}")
    cls = getattr(module, name)
    top = importlib.import_module("rhapsody_lab.backends")
    assert getattr(top, name) is cls  # one class, two import paths


def test_execution_package_is_lazy_and_refuses_unknown_names():
    execution = importlib.import_module("rhapsody_lab.backends.execution")
    assert execution.ConcurrentExecutionBackend.__module__ == "rhapsody_lab.backends.concurrent"
    with pytest.raises(AttributeError, match="NoSuchBackend"):
        execution.NoSuchBackend  # noqa: B018


async def test_task_state_manager_settles_futures_from_backend_callbacks():
    from concurrent.futures import ThreadPoolExecutor

    from rhapsody_lab.api import ComputeTask, TaskExecutionError, TaskStateManager
    from rhapsody_lab.backends import ConcurrentExecutionBackend

    manager = TaskStateManager()
    backend = await ConcurrentExecutionBackend(ThreadPoolExecutor(2))
    backend.register_callback(manager.update_task)
    ok = ComputeTask(function=pow, args=(2, 5))
    bad = ComputeTask(executable="/bin/false")
    waits = [manager.get_wait_future(t.uid, t) for t in (ok, bad)]
    await backend.submit_tasks([ok, bad])
    assert (await waits[0])["return_value"] == 32
    with pytest.raises(TaskExecutionError):
        await waits[1]
    again = manager.get_wait_future(ok.uid, ok)  # already ended: settled at once
    assert again.done() and again.result() is ok
    await backend.shutdown()
