"""Our task dicts as RP task descriptions, and RP's outcome back into the task."""

from __future__ import annotations

from typing import Any

from ..api.errors import TaskExecutionError, TaskValidationError
from ..api.states import CANCELED, DONE, FAILED, RUNNING

__all__ = ["PREFIX", "describe", "fill_outcome", "our_state", "our_uid"]

#: RP uids of our tasks: RP's own ids (``task.000012`` for a raw TaskManager's tasks on
#: the same session) must not collide with ours
PREFIX = "lab."

#: RP task state -> ours (others are RP's internal steps: no move here)
_STATES = {"AGENT_EXECUTING": RUNNING, "DONE": DONE, "FAILED": FAILED, "CANCELED": CANCELED}


def our_state(rp_state: str) -> str | None:
    return _STATES.get(rp_state)


def our_uid(rp_uid: str) -> str | None:
    """The uid of our task behind RP task ``rp_uid`` (None: a raptor master/worker)."""
    return rp_uid[len(PREFIX):] if rp_uid.startswith(PREFIX) else None


def describe(rp: Any, task: dict, raptor_id: str | None) -> Any:
    """The ``rp.TaskDescription`` of ``task`` (``task_backend_specific_kwargs`` first)."""
    uid = task["uid"]
    desc = dict(task.get("task_backend_specific_kwargs") or {})
    desc["uid"] = PREFIX + uid
    if task.get("ranks") is not None:
        desc["ranks"] = int(task["ranks"])
    if task.get("cores") is not None:
        desc["cores_per_rank"] = int(task["cores"])
    if task.get("function") is not None:
        if task.get("is_service"):
            raise TaskValidationError(uid, "is_service: a function cannot be a service "
                                      "task on RP; make it an executable", "is_service")
        if raptor_id is None:
            raise TaskValidationError(uid, "function tasks on RADICAL-Pilot run in raptor: "
                                      "create the backend with raptor_config= (e.g. "
                                      "{'masters': [{'workers': [{'ranks': 1}]}]})", "function")
        desc["mode"] = rp.TASK_FUNCTION
        desc["function"] = rp.PythonTask(task["function"], list(task.get("args") or ()),
                                         dict(task.get("kwargs") or {}))
        desc["raptor_id"] = raptor_id
    else:
        executable = task.get("executable")
        if not executable:
            raise TaskValidationError(uid, "a task needs an executable or a function",
                                      "executable")
        desc["mode"] = rp.TASK_SERVICE if task.get("is_service") else rp.TASK_EXECUTABLE
        desc["executable"] = executable
        desc["arguments"] = [str(a) for a in task.get("arguments") or ()]
    return rp.TaskDescription(desc)  # one typed construction (attribute sets are slow)


def fill_outcome(task: dict, rp_task: Any, state: str) -> None:
    """Copy stdout/stderr/exit code/return value of a final ``rp_task`` into ``task``."""
    task["stdout"] = rp_task.stdout or ""
    stderr = rp_task.stderr or ""
    exc = rp_task.exception
    code = rp_task.exit_code
    task["exit_code"] = code
    if state == DONE:
        task["stderr"] = stderr
        if task.get("function") is not None:
            task["return_value"] = rp_task.return_value
        return
    if state == FAILED:
        detail = rp_task.exception_detail or ""
        why = ", ".join(str(x) for x in (stderr.strip(), exc, detail) if x)
        task["stderr"] = stderr or why
        if task.get("function") is not None and exc:
            task["exception"] = TaskExecutionError(task["uid"], f"function raised: {why}", code)
        elif code not in (None, 0):
            task["exception"] = TaskExecutionError(
                task["uid"], stderr.strip(), code)
        else:
            task["exception"] = TaskExecutionError(task["uid"], why or "RP task failed", code)
    else:
        task["stderr"] = stderr
