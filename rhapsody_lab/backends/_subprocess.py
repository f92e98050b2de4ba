"""Running one executable task as a child process: capture, timeout, kill the whole group.

Children start in their own session (process group) so cancelling or timing out a task
ends the process *and* everything it spawned. Used from worker threads (the GIL is
released while the child runs), which the anchors measured at about twice the rate of
asyncio subprocesses for short commands.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._procgroup import signal_group
from ..api.errors import TaskValidationError
from . import _spawn
from ._at_exit import before_thread_joins
from ._exits import describe_exit

__all__ = ["ExecOptions", "capture_dir", "exec_options", "kill_group", "run_executable",
           "spill_to_files"]

_KNOWN = ("cwd", "env", "shell", "timeout")
_TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
#: a child still running after this long is announced (``still_running``); a shorter one
#: ends first, so its start and end reach the loop together, in one wake
RUNNING_NOTICE = 0.002


class ExecOptions(tuple):
    """``(cwd, env, shell, timeout)`` read once from ``task_backend_specific_kwargs``."""

    __slots__ = ()


_DEFAULT = ExecOptions((None, None, False, None))


def exec_options(task: dict) -> ExecOptions:
    """Validate and extract the execution options of ``task`` (TaskValidationError)."""
    kw = task.get("task_backend_specific_kwargs")
    if not kw:
        return _DEFAULT
    uid = task["uid"]
    cwd, env, timeout = kw.get("cwd"), kw.get("env"), kw.get("timeout")
    shell = kw.get("shell", False)
    if cwd is not None and not isinstance(cwd, str | os.PathLike):
        raise TaskValidationError(uid, f"cwd must be a directory path, got {cwd!r}",
                                  field="task_backend_specific_kwargs.cwd")
    if env is not None:
        if not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()):
            raise TaskValidationError(
                uid, "env must be a dict of str to str, e.g. {'OMP_NUM_THREADS': '2'}",
                field="task_backend_specific_kwargs.env")
        env = {k: str(v) for k, v in env.items()}
    if not isinstance(shell, bool):
        raise TaskValidationError(uid, f"shell must be True or False, got {shell!r}",
                                  field="task_backend_specific_kwargs.shell")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, int | float) or timeout <= 0):
        raise TaskValidationError(uid, f"timeout must be a number of seconds > 0, got "
                                  f"{timeout!r}", field="task_backend_specific_kwargs.timeout")
    return ExecOptions((None if cwd is None else os.fspath(cwd), env, shell, timeout))


def capture_dir(task: dict, work_dir: str | None) -> str | None:
    """Where ``task``'s output files go if it asked for ``capture_stdio`` (else None)."""
    capture = task.get("capture_stdio")
    if not capture:
        return None
    if capture is not True:
        raise TaskValidationError(task["uid"], f"capture_stdio must be True or False, got "
                                  f"{capture!r}", field="capture_stdio")
    return work_dir or os.getcwd()


def spill_to_files(task: dict, folder: str | None) -> None:
    """``capture_stdio`` for a backend whose output arrives as text (Dragon's pipes): write
    ``stdout``/``stderr`` to ``<folder>/<uid>.stdout``/``.stderr`` and keep their paths."""
    folder = capture_dir(task, folder)
    if folder is None:
        return
    base = os.path.join(folder, str(task["uid"]))
    paths = []
    for field in ("stdout", "stderr"):
        path = f"{base}.{field}"
        with open(path, "w", encoding="utf-8", errors="replace") as f:
            f.write(task.get(field) or "")
        paths.append(path)
    task["stdout"], task["stderr"] = paths


def kill_group(proc: subprocess.Popen | _spawn.Child, sig: int = signal.SIGTERM) -> None:
    """Signal the process group of ``proc`` (its children included)."""
    signal_group(proc.pid, sig)


def _terminate(proc: subprocess.Popen) -> None:
    kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(_TERM_GRACE)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
    # the leader may be gone while its group lives on: make sure the group is dead
    kill_group(proc, signal.SIGKILL)


def run_executable(task: dict, opts: ExecOptions,
                   register: Callable[[subprocess.Popen | None], Any] | None = None,
                   capture: str | None = None,
                   still_running: Callable[[], Any] | None = None) -> str:
    """Run ``task``'s executable, fill stdout/stderr/exit_code; return DONE or FAILED.

    ``register(proc)`` is called once the child exists (so it can be cancelled) and
    ``register(None)`` once it has ended. With ``capture`` (a folder, see ``capture_dir``)
    the output goes to ``<capture>/<uid>.stdout`` and ``.stderr``, whose paths become the
    task's ``stdout`` and ``stderr`` (RHAPSODY's ``capture_stdio``). ``still_running()`` is
    called once if the child runs longer than ``RUNNING_NOTICE`` seconds.
    """
    if capture is None:
        return _run(task, opts, register, subprocess.PIPE, subprocess.PIPE, still_running)
    base = os.path.join(capture, str(task["uid"]))
    paths = (f"{base}.stdout", f"{base}.stderr")
    try:
        out = open(paths[0], "wb")  # noqa: SIM115 (closed below, after the child ends)
    except OSError as exc:
        return _spawn_failed(task, 126, f"capture_stdio: cannot write {paths[0]}: {exc}")
    try:
        with out, open(paths[1], "w+b") as err:
            state = _run(task, opts, register, out, err, still_running)
            note = task["stderr"].lstrip("\n")  # only our own words: the output is in files
            if note:
                end = err.seek(0, os.SEEK_END)  # past what the child wrote (a shared offset)
                err.write((f"\n{note}" if end else note).encode())
    except OSError as exc:
        return _spawn_failed(task, 126, f"capture_stdio: cannot write {paths[1]}: {exc}")
    task["stdout"], task["stderr"] = paths
    return state


def _run(task: dict, opts: ExecOptions, register: Any, out: Any, err: Any,
         still_running: Any = None) -> str:
    cwd, env, shell, timeout = opts
    exe = task["executable"]
    args = [str(a) for a in task["arguments"]]
    merged = None if env is None else {**os.environ, **env}
    try:
        try:
            if _spawn.usable(cwd, env):  # the lean path (see _spawn); Popen for the rest
                argv = ["/bin/sh", "-c", " ".join([exe, *args])] if shell else [exe, *args]
                files = [None if f is subprocess.PIPE else f.fileno() for f in (out, err)]
                out, err, code, timed_out = _spawn.run_child(
                    argv, merged, files[0], files[1], timeout, register, still_running,
                    RUNNING_NOTICE, _TERM_GRACE)
            else:
                out, err, code, timed_out = _popen(exe, args, cwd, merged, shell, timeout,
                                                   register, out, err, still_running)
        finally:
            if register is not None:
                register(None)
    except FileNotFoundError as exc:
        missing = cwd if (cwd and not os.path.isdir(cwd)) else exe
        what = "working directory" if missing == cwd else "executable"
        return _spawn_failed(task, 127, f"{what} not found: {missing} ({exc.strerror})")
    except PermissionError as exc:
        return _spawn_failed(task, 126, f"cannot execute {exe}: {exc.strerror}")
    except OSError as exc:
        return _spawn_failed(task, 126, f"cannot start {shlex.join([exe, *args])}: {exc}")
    task["stdout"] = "" if out is None else out.decode(errors="replace")
    task["stderr"] = "" if err is None else err.decode(errors="replace")  # None: to a file
    task["exit_code"] = code
    if timed_out:
        from ..api.errors import TaskExecutionError
        task["stderr"] += f"\n[rhapsody_lab] timed out after {timeout}s; process group killed"
        task["exception"] = TaskExecutionError(task["uid"], f"timed out after {timeout}s", code)
        return "FAILED"
    if code < 0:
        # A signal ended it: say which, not just "exit code -9". In stderr, which the
        # task's TaskExecutionError quotes (on every backend, Dask's workers included);
        # no exception here, as a cancel (SIGTERM from us) makes this CANCELED instead.
        sep = "\n" if task["stderr"] and not task["stderr"].endswith("\n") else ""
        task["stderr"] += f"{sep}[rhapsody_lab] {describe_exit(code)}"
        return "FAILED"
    return "DONE" if code == 0 else "FAILED"


def _popen(exe: str, args: list[str], cwd: str | None, env: dict | None, shell: bool,
           timeout: float | None, register: Any, out: Any, err: Any,
           still_running: Any) -> tuple[bytes | None, bytes | None, int, bool]:
    """The child through ``subprocess.Popen`` (a ``cwd``, or an ``env`` setting ``PATH``;
    ``env`` complete): ``(stdout, stderr, returncode, timed_out)``; OSError if it cannot
    start."""
    cmd: Any = " ".join([exe, *args]) if shell else [exe, *args]
    proc = subprocess.Popen(cmd, shell=shell, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, start_new_session=True)
    if register is not None:
        register(proc)
    timed_out = False
    try:
        out, err = _communicate(proc, timeout, still_running)
    except subprocess.TimeoutExpired:
        timed_out = True
        _terminate(proc)
        out, err = proc.communicate()
    return out, err, proc.returncode, timed_out


def _communicate(proc: subprocess.Popen, timeout: float | None, still_running: Any) -> tuple:
    """``proc.communicate(timeout)``, calling ``still_running()`` once the child has run for
    ``RUNNING_NOTICE`` seconds (a retried communicate loses no output)."""
    if still_running is not None:
        first = RUNNING_NOTICE if timeout is None else min(RUNNING_NOTICE, timeout)
        try:
            return proc.communicate(timeout=first)
        except subprocess.TimeoutExpired:
            still_running()
            if timeout is not None:
                timeout = max(0.0, timeout - first)
    return proc.communicate(timeout=timeout)


def _spawn_failed(task: dict, code: int, message: str) -> str:
    from ..api.errors import TaskExecutionError
    task["stdout"] = ""
    task["stderr"] = message
    task["exit_code"] = code
    task["exception"] = TaskExecutionError(task["uid"], message, code)
    return "FAILED"


#: every process table alive (a backend's, a Dask worker's): their children die at exit
_TABLES: weakref.WeakSet = weakref.WeakSet()


def _kill_children_at_exit() -> None:
    """No executable's child outlives the interpreter (a session never closed, a Dask
    worker shut down while its tasks run): kill every group still running."""
    for table in list(_TABLES):
        table.kill_all()


class ProcessTable:
    """Children of running executable tasks, by uid, so they can be cancelled."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen] = {}
        self._killed: set[str] = set()
        self._lock = threading.Lock()
        _TABLES.add(self)
        before_thread_joins(_kill_children_at_exit)

    def register_for(self, uid: str) -> Callable[[subprocess.Popen | None], None]:
        def register(proc: subprocess.Popen | None) -> None:
            with self._lock:
                if proc is None:
                    self._procs.pop(uid, None)
                    return
                self._procs[uid] = proc
                killed = uid in self._killed
            if killed:
                kill_group(proc, signal.SIGKILL)
        return register

    def kill(self, uid: str) -> bool:
        """End the process group of ``uid``; True if it was running."""
        with self._lock:
            self._killed.add(uid)
            proc = self._procs.get(uid)
        if proc is None:
            return False
        threading.Thread(target=_terminate, args=(proc,), daemon=True).start()
        return True

    def was_killed(self, uid: str) -> bool:
        with self._lock:
            return uid in self._killed

    def forget(self, uid: str) -> None:
        with self._lock:
            self._killed.discard(uid)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs.items())
            self._killed.update(uid for uid, _ in procs)
        for _, proc in procs:
            kill_group(proc, signal.SIGKILL)
