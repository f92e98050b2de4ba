"""What the Dask backend checks before it submits, and what runs on the Dask workers.

The wrappers here (``_call`` for functions, ``_run_exec`` for executables) run inside
Dask worker processes, which import them from this module: they time the task, pass the
cancel gate (``_dask_gate``) and return plain tuples the collector turns into outcomes.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import traceback
from typing import Any

from ..api.errors import SessionError, TaskValidationError
from ..api.states import CANCELED, FAILED
from ._dask_gate import enter, leave
from ._subprocess import ProcessTable, run_executable

# resources= keys accepted for the default LocalCluster: name -> (types, description)
_CLUSTER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "n_workers": ((int,), "an integer >= 1, e.g. 4"),
    "threads_per_worker": ((int,), "an integer >= 1, e.g. 1"),
    "processes": ((bool,), "True (worker processes) or False (threads in this process)"),
    "memory_limit": ((str, int, float, type(None)), "e.g. '2GiB', 0 or None"),
    "resources": ((dict,), "a dict of worker resources, e.g. {'GPU': 1}"),
    "host": ((str,), "an interface address, e.g. '127.0.0.1'"),
    "scheduler_port": ((int,), "a port number, 0 for any"),
    "dashboard_address": ((str, type(None)), "e.g. ':0' or ':8787', None to disable"),
    "local_directory": ((str,), "a writable directory path"),
    "silence_logs": ((int, bool), "a logging level, e.g. 30"),
}
# task_backend_specific_kwargs keys passed on to Dask
_TASK_KEYS = ("resources", "retries", "priority", "workers")
_SAFE = re.compile(r"[^A-Za-z0-9_]+")


def _validate_cluster_resources(resources: Any) -> dict[str, Any]:
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise SessionError(f"resources must be a dict of LocalCluster options, got "
                           f"{type(resources).__name__}; e.g. resources={{'n_workers': 4}}")
    for key, value in resources.items():
        if key not in _CLUSTER_KEYS:
            raise SessionError(
                f"resources[{key!r}] is not a LocalCluster option this backend accepts; "
                f"use one of {sorted(_CLUSTER_KEYS)}, or build the cluster yourself and "
                f"pass cluster=")
        types, what = _CLUSTER_KEYS[key]
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not bad and key in ("n_workers", "threads_per_worker") and value < 1:
            bad = True
        if not bad and key == "resources":
            bad = not all(isinstance(k, str) and isinstance(v, int | float)
                          and not isinstance(v, bool) and v >= 0 for k, v in value.items())
        if bad:
            raise SessionError(f"resources[{key!r}] must be {what}, got {value!r}")
    return dict(resources)


def _validate_task_kwargs(task: dict) -> None:
    kw = task.get("task_backend_specific_kwargs") or {}
    if not isinstance(kw, dict):
        raise TaskValidationError(task["uid"], "task_backend_specific_kwargs must be a dict",
                                  field="task_backend_specific_kwargs")
    res = kw.get("resources")
    if res is not None and not (isinstance(res, dict) and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            and v > 0 for k, v in res.items())):
        raise TaskValidationError(
            task["uid"], f"resources must be a dict of resource name to amount > 0, e.g. "
            f"{{'GPU': 1}}, got {res!r}", field="task_backend_specific_kwargs.resources")
    retries = kw.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        raise TaskValidationError(task["uid"], f"retries must be an integer >= 0, got "
                                  f"{retries!r}", field="task_backend_specific_kwargs.retries")
    prio = kw.get("priority")
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)):
        raise TaskValidationError(task["uid"], f"priority must be an integer, got {prio!r}",
                                  field="task_backend_specific_kwargs.priority")
    workers = kw.get("workers")
    if workers is not None and not (isinstance(workers, str) or (
            isinstance(workers, list | tuple) and all(isinstance(w, str) for w in workers))):
        raise TaskValidationError(task["uid"], f"workers must be an address or a list of "
                                  f"addresses, got {workers!r}",
                                  field="task_backend_specific_kwargs.workers")


def _dask_options(task: dict) -> tuple:
    """Hashable Dask submit options of ``task`` (tasks sharing them go in one map call)."""
    kw = task.get("task_backend_specific_kwargs")
    if not kw:
        return ()
    out = []
    for k in _TASK_KEYS:
        v = kw.get(k)
        if v is None:
            continue
        if isinstance(v, dict):
            v = tuple(sorted(v.items()))
        elif isinstance(v, list):
            v = tuple(v)
        out.append((k, v))
    return tuple(out)


def _map_options(opts: tuple) -> dict:
    """``client.map`` keyword arguments from ``_dask_options``."""
    kw = dict(opts)
    if "workers" in kw and isinstance(kw["workers"], tuple):
        kw["workers"] = list(kw["workers"])
    if "resources" in kw:
        kw["resources"] = dict(kw["resources"])
    return kw


_PLAIN = (int, float, str, bytes, bool, type(None))


def _plain(args: Any, kwargs: Any) -> bool:
    """Whether the arguments are only simple values (certain to pickle)."""
    return all(type(a) in _PLAIN for a in args or ()) and all(
        type(v) in _PLAIN for v in (kwargs or {}).values())


def _pickle_error(obj: Any) -> tuple[str | None, int]:
    """Why ``obj`` cannot be pickled (None if it can), and its pickled size in bytes."""
    import cloudpickle
    try:
        return None, len(cloudpickle.dumps(obj))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}", 0


def _plain_bytes(args: Any, kwargs: Any) -> int:
    """About the size of plain arguments: their strings' and bytes' lengths."""
    n = 0
    for a in (*(args or ()), *(kwargs or {}).values()):
        if type(a) in (str, bytes):
            n += len(a)
    return n


# -- what runs on the workers ----------------------------------------------------------
_worker_procs = ProcessTable()


def _slot() -> str | None:
    try:
        from distributed import get_worker
        return get_worker().address
    except Exception:
        return None


def _call(payload: tuple) -> tuple:
    """Run one function task on a worker: ``(ok, value|exc, traceback, t0, t1, slot)``;
    ``ok`` is None (and the function never ran) when a cancel got to the gate first."""
    uid, fn, args, kwargs, retries = payload
    t0 = enter(uid)
    if t0 is None:
        return (None, None, None, None, time.time(), _slot())
    try:
        ok, value, tb = _attempt(fn, args, kwargs, retries)
    finally:
        leave(uid)
    return (ok, value, tb, t0, time.time(), _slot())


def _attempt(fn: Any, args: Any, kwargs: Any, retries: int) -> tuple[bool, Any, str | None]:
    """Call ``fn`` (awaiting a coroutine), again up to ``retries`` times while it raises:
    ``(True, value, None)`` or ``(False, portable exception, traceback)`` of the last try.
    Retries happen here, not in Dask: the wrappers catch the function's exception."""
    while True:
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            return True, value, None
        except BaseException as exc:
            if retries > 0 and isinstance(exc, Exception):
                retries -= 1
                continue
            return False, _portable(exc), "".join(traceback.format_exception(exc))


def _retries(task: dict) -> int:
    """The ``retries`` a function task asked for (``task_backend_specific_kwargs``)."""
    kw = task.get("task_backend_specific_kwargs")
    return (kw.get("retries") or 0) if kw else 0


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError carrying its repr."""
    try:
        import cloudpickle
        cloudpickle.loads(cloudpickle.dumps(exc))
        if not isinstance(exc, Exception):
            raise TypeError("not an Exception")
        return exc
    except Exception:
        return RuntimeError(repr(exc))


def _run_exec(payload: tuple) -> tuple:
    """Run one executable task on a worker: ``(state, stdout, stderr, exit_code, t0, t1, slot)``.

    With ``capture`` (a folder the workers can write: the session's work_dir) its output
    goes to files there, as on the concurrent backend.
    """
    uid, exe, arguments, opts, capture = payload
    t0 = enter(uid)
    if t0 is None:  # canceled before it started: never start it
        return (CANCELED, "", "", None, None, time.time(), _slot())
    rec: dict[str, Any] = {"uid": uid, "executable": exe, "arguments": arguments}
    try:
        state = run_executable(rec, opts, _worker_procs.register_for(uid), capture)
    except Exception as exc:  # never lose a task to an unexpected error
        rec.update(stdout="", stderr="".join(traceback.format_exception(exc)), exit_code=1)
        state = FAILED
    finally:
        leave(uid)
    if _worker_procs.was_killed(uid):
        state = CANCELED
        _worker_procs.forget(uid)
    return (state, rec.get("stdout"), rec.get("stderr"), rec.get("exit_code"), t0,
            time.time(), _slot())


def _kill_on_worker(uids: list[str]) -> int:
    return sum(bool(_worker_procs.kill(uid)) for uid in uids)


# -- the backend -----------------------------------------------------------------------
