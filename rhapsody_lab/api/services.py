"""Services: long-running processes (an inference server, a database) beside short tasks.

A ``Service`` is a command started once, with a log file, an endpoint and a readiness check
(an HTTP URL that answers 2xx once the service can take work)::

    svc = Service("vllm", [python, "-m", "vllm.entrypoints.openai.api_server", ...],
                  ready_url="http://127.0.0.1:8001/v1/models",
                  endpoint="http://127.0.0.1:8001/v1")
    await svc.start()   # launches the process and waits until it is ready
    ...
    await svc.stop()    # SIGTERM, SIGKILL after ``stop_timeout``; its children too

If the process exits or never becomes ready, ``start()``/``ready()`` raise ``BackendError``
with the last lines of its log. A service never restarts itself: its death is reported to
``on_exit`` callbacks (from a watcher thread) and whoever owns it decides. The process is
independent of any event loop, so one service can outlive the loop that started it.

Placement (``placement=``): ``"local"`` is a child process of the caller in its own
session/process group. ``"dragon"`` starts the command as a Dragon process
(``dragon.native.process.Process``), on node ``host=`` if given (a node name of the runtime,
else ``ResourceError``) or where the runtime's policy puts it; it needs the script to run
under Dragon (``dragon -s script.py``). ``"auto"`` (the default) means ``"dragon"`` when
this process runs under a Dragon runtime and ``"local"`` otherwise. ``placement`` records
what was used (``"local"`` or ``"dragon on <host> (puid N)"``) and ``host`` the node.
``{host}`` in ``ready_url`` and ``endpoint`` becomes the node's hostname once the process is
placed (``127.0.0.1`` locally); in the command it becomes the pinned ``host``, else
``0.0.0.0`` under Dragon (the node is not known before placement) and ``127.0.0.1`` locally.
A Dragon-placed service writes its log on the node it runs on (use a shared file system
for ``log_file`` when that is another node); the processes it leaves behind are found by a
token in their environment and ended with it.

Standard library only (this is the engine; ``rhapsody_lab.services`` re-exports it). Dragon
placement goes through the launcher registered as ``"services.dragon"`` (``api.extensions``)
by ``rhapsody_lab.backends._dragon_launch``: a namespace with ``TOKEN_ENV``,
``child_env(extra)``, ``start_process(command, *, env, cwd, log_file, host, who) -> (proc,
hostname)``, ``stop_process(proc, grace)`` and ``kill_tagged(token, hostname)``; ``proc``
has ``puid``, ``join()``, ``returncode`` and ``kill()``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._net import free_port
from .._procgroup import signal_group
from . import extensions
from .errors import BackendError, ResourceError
from .http_check import http_get
from .placement import resolve_placement

__all__ = ["Service", "free_port", "http_get", "resolve_placement"]

_counter = itertools.count(1)
_LIVE: weakref.WeakSet[Service] = weakref.WeakSet()
_DRAGON_ATEXIT = False  # _stop_all registered again once Dragon is imported


class Service:
    """A long-running process with a readiness check, a log file and an endpoint."""

    def __init__(self, name: str, command: Sequence[str], *, ready_url: str | None = None,
                 endpoint: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, log_file: str | None = None,
                 startup_timeout: float = 600.0, stop_timeout: float = 15.0,
                 poll_interval: float = 0.5, placement: str = "auto",
                 host: str | None = None):
        if not isinstance(name, str) or not name:
            raise BackendError("service", f"name must be a non-empty string, got {name!r}")
        if isinstance(command, str) or not command or not all(
                isinstance(c, str) for c in command):
            raise BackendError(name, f"command must be a non-empty list of strings, got "
                               f"{command!r}")
        for field, v in (("startup_timeout", startup_timeout), ("stop_timeout", stop_timeout),
                         ("poll_interval", poll_interval)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise BackendError(name, f"{field} must be a number of seconds > 0, got {v!r}")
        if placement not in ("auto", "local", "dragon"):
            raise BackendError(name, f"placement must be 'auto', 'local' or 'dragon', got "
                               f"{placement!r}")
        if host is not None and (not isinstance(host, str) or not host):
            raise BackendError(name, f"host must be a node name of the Dragon runtime, got "
                               f"{host!r}")
        if host is not None and placement == "local":
            raise BackendError(name, f"host={host!r} places the service through Dragon; it "
                               "cannot be combined with placement='local'")
        self.name = name
        self.command = list(command)
        self.ready_url = ready_url
        self.endpoint = endpoint
        self.env = dict(env) if env else {}
        self.cwd = cwd
        if log_file is None:
            log_file = os.path.join(tempfile.gettempdir(),
                                    f"rhapsody-service-{name}-{os.getpid()}-{next(_counter)}.log")
        self.log_file = log_file
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self.poll_interval = float(poll_interval)
        self.requested_placement = placement
        self.requested_host = host
        self.placement = "local"
        self.host: str | None = None  # the node it runs on, once started
        self.puid: int | None = None  # its Dragon process id, if placed through Dragon
        self.state = "NEW"  # NEW, STARTING, READY, STOPPED, FAILED
        self.returncode: int | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self._proc: subprocess.Popen | None = None
        self._dproc: Any = None  # dragon.native.process.Process when placed through Dragon
        self._token = uuid.uuid4().hex
        self._exited = threading.Event()  # set by the watcher once the process has ended
        self._stopping = False
        self._exit_callbacks: list[Callable[[Service], None]] = []
        self._watcher: threading.Thread | None = None

    # -- information -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The local pid (``None`` when placed through Dragon: see ``puid``)."""
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        """Whether the process runs (a zombie not yet reaped by the watcher counts as dead)."""
        if self._exited.is_set():
            return False
        if self._dproc is not None:  # the watcher's join() returns when the runtime sees
            return True              # the exit (no round trip to Dragon from the caller)
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        try:  # the watcher blocks in wait(), so poll() from here cannot reap: ask /proc
            with open(f"/proc/{proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return proc.poll() is None

    def tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the log."""
        try:
            with open(self.log_file, errors="replace") as f:
                return "".join(deque(f, maxlen=n)).rstrip()
        except OSError:
            return ""

    def on_exit(self, callback: Callable[[Service], None]) -> None:
        """Call ``callback(service)`` (from a watcher thread) when the process ends."""
        self._exit_callbacks.append(callback)

    def __repr__(self) -> str:
        where = f"puid={self.puid} host={self.host}" if self._dproc is not None else \
            f"pid={self.pid}"
        return (f"<Service {self.name} {self.state} {where} endpoint={self.endpoint} "
                f"log={self.log_file}>")

    # -- life cycle --------------------------------------------------------------------
    async def start(self, wait_ready: bool = True) -> Service:
        """Launch the process; with ``wait_ready`` also wait until it answers."""
        if self.state != "NEW":
            raise BackendError(self.name, f"service is {self.state.lower()}; create a new "
                               "Service to start it again")
        dragon = resolve_placement(self.requested_placement, self.name,
                                   self.requested_host) == "dragon"
        os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)
        self.state = "STARTING"
        self.started_at = time.time()
        try:
            if dragon:
                await asyncio.to_thread(self._launch_dragon)
            else:
                self._launch_local()
        except BaseException:
            self.state = "FAILED"
            raise
        _LIVE.add(self)
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"rhapsody-service-{self.name}")
        self._watcher.start()
        if wait_ready:
            try:
                await self.ready()
            except BaseException:
                await self.stop()
                self.state = "FAILED"
                raise
        return self

    def _place(self, host: str) -> None:
        self.host = host
        if self.ready_url is not None:
            self.ready_url = self.ready_url.replace("{host}", host)
        if self.endpoint is not None:
            self.endpoint = self.endpoint.replace("{host}", host)

    def _launch_local(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        command = [c.replace("{host}", "127.0.0.1") for c in self.command]
        with open(self.log_file, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, cwd=self.cwd, start_new_session=True)
            except OSError as exc:
                raise BackendError(self.name, f"could not launch {command[0]!r}: "
                                   f"{exc}") from exc
        self.command = command
        self.placement = "local"
        self._place("127.0.0.1")

    def _launch_dragon(self) -> None:
        dl = extensions.provider("services.dragon")
        global _DRAGON_ATEXIT
        if not _DRAGON_ATEXIT:  # runs before Dragon's own exit handlers (registered earlier)
            atexit.register(_stop_all)
            _DRAGON_ATEXIT = True
        pinned = self.requested_host
        command = [c.replace("{host}", pinned or "0.0.0.0") for c in self.command]
        env = dl.child_env({**self.env, dl.TOKEN_ENV: self._token})
        with open(self.log_file, "ab"):
            pass  # it exists (and is ours) before the process appends to it
        try:
            proc, host = dl.start_process(command, env=env, cwd=self.cwd,
                                          log_file=os.path.abspath(self.log_file),
                                          host=pinned, who=self.name)
        except (BackendError, ResourceError):
            raise
        except Exception as exc:
            why = (str(exc).strip().splitlines() or [repr(exc)])[-1][-300:]
            raise BackendError(self.name, f"Dragon could not start {command[0]!r}"
                               f"{' on ' + pinned if pinned else ''}: {why}") from exc
        self._dproc = proc
        _LIVE.add(self)  # even if the caller was canceled meanwhile: ended at exit
        self.puid = proc.puid
        self.command = command
        self.placement = f"dragon on {host} (puid {proc.puid})"
        self._place(host)

    def _exit_code(self) -> tuple[bool, int | None]:
        """(ended?, exit code) without blocking."""
        if self._dproc is not None:
            return self._exited.is_set(), self.returncode
        code = self._proc.poll()
        return code is not None, code

    async def ready(self, timeout: float | None = None) -> Service:
        """Wait until the readiness URL answers 2xx; raise if the process ends first."""
        if self.state == "READY":
            return self
        if self._proc is None and self._dproc is None:
            raise BackendError(self.name, "service was not started; `await service.start()`")
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last_err = "no answer yet"
        while True:
            ended, code = self._exit_code()
            if ended:
                self.state = "FAILED"
                raise BackendError(self.name, f"service exited with code {code} before it "
                                   f"was ready (command {' '.join(self.command)!r}, "
                                   f"{self.placement}); last log lines of "
                                   f"{self.log_file}:\n{self.tail()}")
            if self.ready_url is None:
                break
            try:
                status, _ = await http_get(self.ready_url, timeout=min(5.0, timeout))
                if 200 <= status < 300:
                    break
                last_err = f"HTTP {status}"
            except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                last_err = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise BackendError(self.name, f"service not ready at {self.ready_url} after "
                                   f"{timeout:g}s ({last_err}); last log lines of "
                                   f"{self.log_file}:\n{self.tail()}")
            await asyncio.sleep(self.poll_interval)
        self.state = "READY"
        self.ready_at = time.time()
        return self

    async def stop(self) -> None:
        """End the process and what it started: SIGTERM, then SIGKILL after ``stop_timeout``."""
        if self._proc is None and self._dproc is None:
            if self.state == "NEW":
                self.state = "STOPPED"
            return
        self._stopping = True
        await asyncio.to_thread(self._terminate)
        if self.state != "FAILED":
            self.state = "STOPPED"

    def _terminate(self) -> None:
        if self._dproc is not None:
            dl = extensions.provider("services.dragon")
            if not self._exited.is_set():
                dl.stop_process(self._dproc, self.stop_timeout)
            if self._watcher is not None:
                self._watcher.join(5)
            # what the process started (vLLM's engine core) may outlive it
            dl.kill_tagged(self._token, self.host or "")
            _LIVE.discard(self)
            return
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        # the group may hold children (vLLM's engine core) after the leader is gone
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)  # SIGKILLed: it dies, but a large server can take seconds under load
        self.returncode = proc.returncode
        _LIVE.discard(self)

    def kill(self) -> None:
        """End the process at once (no grace period); the owner sees an exit."""
        if self._dproc is not None:
            if not self._exited.is_set():
                with contextlib.suppress(Exception):
                    self._dproc.kill()
                if self._watcher is not None:
                    self._watcher.join(10)  # exit callbacks called on return
            return
        if self._proc is not None and self._proc.returncode is None:
            signal_group(self._proc.pid, signal.SIGKILL)
            if self._watcher is not None:
                self._watcher.join(5)  # reaped (and exit callbacks called) on return

    def _watch(self) -> None:
        if self._dproc is not None:
            code = None
            try:
                code = self._dproc.join()
            except Exception:  # the runtime went away under us
                with contextlib.suppress(Exception):
                    code = self._dproc.returncode
            self.returncode = code
            self._exited.set()
            if not self._stopping:
                self.state = "FAILED"
                dl = extensions.provider("services.dragon")
                dl.kill_tagged(self._token, self.host or "")  # no orphans of a dead leader
        else:
            proc = self._proc
            assert proc is not None
            proc.wait()
            self.returncode = proc.returncode
            self._exited.set()
            if not self._stopping:
                self.state = "FAILED"
                signal_group(proc.pid, signal.SIGKILL)  # no orphans of a dead leader
        for cb in list(self._exit_callbacks):
            try:
                cb(self)
            except Exception:  # pragma: no cover - a callback must not kill the watcher
                import logging
                logging.getLogger(__name__).exception("exit callback of %s failed", self.name)


@atexit.register
def _stop_all() -> None:
    """No service outlives the interpreter that started it."""
    for svc in list(_LIVE):
        with contextlib.suppress(Exception):
            svc._stopping = True
            svc._terminate()
