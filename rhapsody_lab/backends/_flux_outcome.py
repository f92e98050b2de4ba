"""A finished Flux job -> its task's result fields and terminal state.

Runs on the Flux thread at the job's ``finish`` event (or at ``clean`` for a job that never
ran): reads the job's output files and, for a function, the runner's result file, then
removes them. The exit status is Flux's wait status (RFC 21 ``finish``: ``status``).
"""

from __future__ import annotations

import os
import pickle
import signal
from typing import Any

from ..api.backend import result_text
from ..api.errors import TaskExecutionError
from ..api.states import CANCELED, DONE, FAILED
from ._exits import describe_exit

__all__ = ["exit_code", "finished", "never_ran"]


def _take(path: str) -> bytes | None:
    """The contents of ``path`` (None if missing); the file is removed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    return data


def _text(data: bytes | None) -> str:
    return "" if not data else data.decode(errors="replace")


def exit_code(status: int) -> int:
    """A wait status as a Popen-style return code (negative: the signal)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return status


def _append(task: dict, line: str) -> None:
    err = task.get("stderr") or ""
    sep = "\n" if err and not err.endswith("\n") else ""
    task["stderr"] = f"{err}{sep}[rhapsody_lab] {line}"


def finished(task: dict, paths: tuple[str, str, str, str], status: int,
             exception: tuple[str, str] | None, canceled: bool,
             timeout: float | None) -> str:
    """Fill in ``task`` from a job that ran; returns its terminal state."""
    out, err, fin, fres = paths
    task["stdout"] = _text(_take(out))
    task["stderr"] = _text(_take(err))
    code = exit_code(status)
    task["exit_code"] = code
    is_fn = task.get("function") is not None
    result = None
    if is_fn:
        _take(fin)
        raw = _take(fres)
        if raw is not None:
            try:
                result = pickle.loads(raw)
            except Exception as exc:
                result = ("err", None, f"the function's result cannot be unpickled here: "
                          f"{exc!r}")
    if canceled:
        if not task["stderr"]:
            task["stderr"] = "canceled: flux cancel (the job's processes were ended)"
        return CANCELED
    if exception is not None and exception[0] == "timeout":
        _append(task, f"timed out after {timeout}s (the Flux job's duration); Flux ended it")
        task["exception"] = TaskExecutionError(task["uid"], f"timed out after {timeout}s", code)
        return FAILED
    if is_fn and result is not None:
        if result[0] == "ok" and code == 0:
            task["return_value"] = result[1]
            task["stdout"] = result_text(result[1])
            return DONE
        if result[0] == "err":
            exc, text = result[1], result[2]
            task["stderr"] = text
            task["exit_code"] = 1
            task["exception"] = exc if isinstance(exc, Exception) else TaskExecutionError(
                task["uid"], text, 1)
            return FAILED
    if code == 0 and not is_fn:
        return DONE
    if exception is not None:
        _append(task, f"Flux job exception {exception[0]}: {exception[1]}")
    if code < 0:
        _append(task, describe_exit(code))
    elif code > 128 and _is_signal(code - 128):  # Flux's shell: 128 + the signal
        _append(task, f"exit code {code}: {describe_exit(128 - code)}")
    elif code == 127 and not task["stderr"].strip():
        _append(task, f"executable not found: {task.get('executable')}")
    elif is_fn and result is None:
        _append(task, f"the function's process ended without a result ({describe_exit(code)})")
    return FAILED


def _is_signal(n: int) -> bool:
    try:
        signal.Signals(n)
    except ValueError:
        return False
    return True


def never_ran(task: dict, paths: tuple[str, ...], exception: tuple[str, str] | None,
              canceled: bool) -> str:
    """Fill in ``task`` from a job that ended before it ran; returns its terminal state."""
    for path in paths:
        _take(path)
    if canceled:
        task["stderr"] = "canceled: flux cancel before the job started"
        return CANCELED
    kind, note = exception or ("unknown", "the job ended before it started")
    task["stderr"] = f"Flux job exception {kind}: {note}"
    task["exception"] = TaskExecutionError(task["uid"], task["stderr"], None)
    return FAILED


def exception_of(context: dict[str, Any]) -> tuple[str, str] | None:
    """``(type, note)`` of a fatal (severity 0) ``exception`` event, else None."""
    if context.get("severity", 0) != 0:
        return None
    return str(context.get("type", "exception")), str(context.get("note", ""))
