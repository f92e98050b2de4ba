"""RADICAL-Pilot's process environment, pilot description and leftover processes.

RP reads its settings from environment variables when ``radical.utils`` is imported and
passes them on to every bridge, component and agent process it starts, so ``prepare``
sets them in ``os.environ`` before the first import: everything on the loopback, no NTP
probe, no profiling, RP's state under the session's work directory, and the running venv
(``VIRTUAL_ENV``, its ``bin`` on ``PATH``) for the agent (else ``radical-pilot-agent_0`` is
not found and the pilot fails with exit 127). ``release`` puts the kernel's environment
back when the last RP backend of the process has closed: what it set, unless changed since,
and its entry of ``PATH`` (the user's own changes to ``PATH`` stay). Left in ``$HOME``: PSI/J (RP's
pilot launcher, run in an RP component process) deploys its two launcher scripts once per
user to ``~/.psij/work/<hash>/`` (its default is fixed from ``$HOME`` at import, and RP
passes it no configuration); they hold no session data. RP's id counters go to
``$RADICAL_BASE/.radical/utils/<sid>/`` with ``RADICAL_BASE`` as it was when
``radical.utils`` was first imported in the process: the first RP backend's state dir, or
``~/.radical`` if the user imported ``radical.pilot`` before any backend started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["kill_session_processes", "pilot_description", "prepare", "release", "session_pids"]

#: fixed settings (the user's own values win where they set one)
_ENV = {"RADICAL_DEFAULT_IFACE": "lo", "RADICAL_UTILS_NTPHOST": "127.0.0.1",
        "RADICAL_PROFILE": "FALSE", "RADICAL_REPORT": "FALSE"}


#: variables that name the state directory of the backend being started
_BASE_KEYS = ("RADICAL_BASE", "RADICAL_CONFIG_USER_DIR")
_lock = threading.Lock()
_users = 0
#: what the first ``prepare`` set (key -> value) and each key's value before (None: unset)
_set: dict[str, str] = {}
_saved: dict[str, str | None] = {}
_path_entry: list[str] = []  # the directory ``prepare`` put at the front of PATH, if any


def prepare(base: str) -> None:
    """Set RP's environment (before ``import radical.pilot``); ``base``: its state dir.

    Each call holds the environment until its ``release``; the state directory is this
    backend's (a second backend of the kernel does not write into the first one's), unless
    the user had set ``RADICAL_BASE`` themselves.
    """
    global _users
    os.makedirs(base, exist_ok=True)
    with _lock:
        _users += 1
        wanted = {k: v for k, v in _ENV.items() if k not in os.environ}
        wanted.update({k: base for k in _BASE_KEYS if k not in os.environ or k in _set})
        if sys.prefix != sys.base_prefix and "VIRTUAL_ENV" not in os.environ:
            wanted["VIRTUAL_ENV"] = sys.prefix  # a venv: the agent runs RP from it
        for key, value in wanted.items():
            if key not in _set:
                _saved[key] = os.environ.get(key)
            _set[key] = os.environ[key] = value
        bindir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "")
        if bindir not in path.split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + path if path else bindir
            _path_entry.append(bindir)


def release() -> None:
    """End one ``prepare``; the last one puts back the variables as they were before."""
    global _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        for key, value in _set.items():
            if os.environ.get(key) != value:
                continue  # changed since: the user's now
            if _saved[key] is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = _saved[key]  # type: ignore[assignment]
        parts = os.environ.get("PATH", "").split(os.pathsep)
        for entry in _path_entry:  # only the entries added, other changes to PATH kept
            if entry in parts:
                parts.remove(entry)
        if _path_entry:
            os.environ["PATH"] = os.pathsep.join(parts)
        _set.clear()
        _saved.clear()
        _path_entry.clear()


def pilot_description(resources: dict, sandbox: str) -> dict[str, Any]:
    """RHAPSODY's resources dict as a pilot description (defaults: this machine)."""
    desc: dict[str, Any] = {"resource": "local.localhost", "runtime": 30,
                            "cores": os.cpu_count() or 1}
    desc.update(resources)
    # exit_on_error SIGTERMs the client process (the kernel) when the pilot fails
    desc["exit_on_error"] = False
    desc.setdefault("sandbox", sandbox)
    return desc


def session_pids(sid: str) -> list[int]:
    """Processes (not this one) whose command line or environment names RP session ``sid``."""
    me, found = os.getpid(), []
    needle = sid.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
                        break
            except OSError:
                continue
    return found


def kill_session_processes(sid: str, grace: float = 2.0) -> int:
    """End every process of RP session ``sid`` (TERM, then KILL); returns how many."""
    pids = session_pids(sid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
