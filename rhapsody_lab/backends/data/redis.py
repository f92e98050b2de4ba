"""RedisDataBackend: one or more independent, private ``redis-server`` processes.

``RedisDataBackend()`` starts one local server on the loopback, on a free TCP port (as
RHAPSODY does; ``port=`` picks it), with a random password; its data and log go to a 0700
folder under the session's ``work_dir``. ``unix_socket=True`` serves a Unix socket (mode
0700, in a fresh 0700 folder) and no TCP port instead; ``cmd=`` (with ``{config}``)
launches on other hosts (``srun ...``). Every server needs the password (in the endpoint).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import secrets
import shlex
import shutil
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from ..._net import free_port
from . import _resp
from ._redis_conf import (
    check_args,
    config_text,
    is_local,
    private_dir,
    private_socket_dir,
    write_private,
)
from .base import DataBackend, DataBackendStartupError, Endpoint

__all__ = ["RedisDataBackend", "RedisEndpoint"]

_SETPRIV = shutil.which("setpriv") is not None  # util-linux (Debian: always there)
_PACKAGE_HINT = ("install Debian's redis-server package (apt-get install redis-server; the "
                 "CI runs .ci/setup.d/60-redis.sh) or pass redis_server_path=")


@dataclasses.dataclass(frozen=True)
class RedisEndpoint(Endpoint):
    """One server: ``host``/``port`` (``port == 0`` for a Unix socket), ``unix_socket``
    and ``password``. ``serialize()`` is a URL ``redis.Redis.from_url`` accepts."""

    host: str
    port: int
    unix_socket: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def serialize(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.unix_socket:
            return f"unix://{auth}{self.unix_socket}"
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``redis.Redis(**kw)``."""
        where: dict[str, object] = ({"unix_socket_path": self.unix_socket} if self.unix_socket
                                    else {"host": self.host, "port": self.port})
        return {**where, "password": self.password}


class RedisDataBackend(DataBackend):
    """A data backend of ``len(hosts)`` independent Redis servers (not a Redis Cluster)."""

    def __init__(self, *, name: str = "redis", hosts: Sequence[str] | None = None,
                 port: int | None = None, cmd: str | None = None,
                 redis_server_path: str = "redis-server", extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, work_dir: str | os.PathLike | None = None,
                 connect_timeout: float = 5.0, startup_timeout: float = 30.0,
                 poll_interval: float = 0.2, shutdown_grace_period: float = 5.0,
                 password: str | None = None, unix_socket: bool | None = None) -> None:
        """``port``: TCP on every host (required with ``cmd``); ``cmd``: a launch template
        with ``{host}``, ``{port}``, ``{config}``, run without a shell; ``env`` is added to
        this process's environment; ``work_dir``: the data folder (default: under the
        session's ``work_dir``, or ``./rhapsody_lab.data.<hex>``); ``password``: at least
        16 characters (default: random); ``unix_socket=True``: a private Unix socket and
        no TCP port (local servers only; default: TCP on a free port, as in RHAPSODY)."""
        super().__init__(name=name)
        args = check_args(hosts, port, cmd, redis_server_path, extra_args, env, work_dir,
                          password, unix_socket, dict(
                              connect_timeout=connect_timeout, startup_timeout=startup_timeout,
                              poll_interval=poll_interval,
                              shutdown_grace_period=shutdown_grace_period))
        self._hosts: list[str] = args["hosts"]
        self._unix = args["unix_socket"]
        self._port = port
        self._cmd = cmd
        self._server = redis_server_path
        self._extra = list(extra_args)
        self._env = {**os.environ, **env} if env is not None else None
        self._work_dir: str | None = args["work_dir"]
        self._connect_timeout = args["connect_timeout"]
        self._startup_timeout = args["startup_timeout"]
        self._poll = args["poll_interval"]
        self._grace = args["shutdown_grace_period"]
        self._password = password or secrets.token_urlsafe(32)
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._planned: list[RedisEndpoint] = []
        self._logs: dict[int, str] = {}
        self._socket_dir: str | None = None

    @property
    def work_dir(self) -> str | None:
        """The data folder (known once started, or when given)."""
        return self._work_dir

    def _data_root(self) -> str:
        if self._work_dir is None:
            base = self._session_dir or os.path.join(
                os.getcwd(), f"rhapsody_lab.data.{uuid.uuid4().hex[:8]}")
            self._work_dir = base
        os.makedirs(self._work_dir, mode=0o700, exist_ok=True)  # a folder of the user's
        return self._work_dir                               # own is left as it is

    def _argv(self, index: int, ep: RedisEndpoint, config: str) -> list[str]:
        if self._cmd is not None:
            q = shlex.quote
            return shlex.split(self._cmd.format(host=q(ep.host), port=ep.port, config=q(config)))
        # The server gets SIGTERM (it saves, then exits) if this process dies without
        # shutting it down (a killed kernel): no orphan keeps the data or the socket.
        guard = ["setpriv", "--pdeathsig", "TERM", "--"] if _SETPRIV else []
        return [*guard, self._server, config, *self._extra]

    async def _do_start(self, wait: bool) -> list[Endpoint]:
        if self._cmd is None and shutil.which(self._server) is None:
            raise DataBackendStartupError(
                f"RedisDataBackend '{self.name}': {self._server!r} was not found (no such "
                "executable, or not on PATH); "
                f"{_PACKAGE_HINT}")
        root = self._data_root()
        if self._unix:
            self._socket_dir = private_socket_dir()
        self._planned = []
        taken: set[int] = set()
        for i, host in enumerate(self._hosts):
            if self._unix:
                ep = RedisEndpoint("localhost", 0, os.path.join(self._socket_dir, f"node{i}.sock"),
                                   self._password)
            else:
                port = self._port or _free_port(taken)
                ep = RedisEndpoint(_endpoint_host(host) if self._cmd is None else host, port,
                                   None, self._password)
            self._planned.append(ep)
        try:
            _raise_first(await asyncio.gather(
                *(self._launch(i, ep, root) for i, ep in enumerate(self._planned)),
                return_exceptions=True))
            if wait:
                _raise_first(await asyncio.gather(
                    *(self._wait_ready(i, ep) for i, ep in enumerate(self._planned)),
                    return_exceptions=True))
        except BaseException:
            await self._stop_all()  # every launch has ended: nothing starts after this
            raise
        return list(self._planned)

    async def _launch(self, index: int, ep: RedisEndpoint, root: str) -> None:
        node_dir = private_dir(os.path.join(root, f"node{index}"))
        config = os.path.join(node_dir, "redis.conf")
        bind = "127.0.0.1" if self._cmd is None or is_local(ep.host) else "0.0.0.0"
        write_private(config, config_text(data_dir=node_dir, password=self._password,
                                          port=ep.port, socket_path=ep.unix_socket, bind=bind))
        log = os.path.join(node_dir, "redis.log")
        self._logs[index] = log
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(index, ep, config), stdin=asyncio.subprocess.DEVNULL, stdout=fd,
                stderr=fd, env=self._env, cwd=node_dir, start_new_session=True, umask=0o077)
        except OSError as exc:
            raise DataBackendStartupError(
                f"RedisDataBackend '{self.name}': cannot run {self._argv(index, ep, config)[0]!r}"
                f" ({exc.strerror}); {_PACKAGE_HINT}") from None
        finally:
            os.close(fd)
        self._processes[index] = proc
        _LIVE[proc.pid] = self._socket_dir

    def _address(self, ep: RedisEndpoint) -> str | tuple[str, int]:
        return ep.unix_socket or (ep.host, ep.port)

    async def _ping(self, ep: RedisEndpoint) -> bool:
        try:
            reply = await _resp.command(self._address(ep), ("PING",), password=ep.password,
                                        timeout=self._connect_timeout)
        except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return False
        return reply == [b"PONG"]

    async def _wait_ready(self, index: int, ep: RedisEndpoint) -> None:
        deadline = time.monotonic() + self._startup_timeout
        proc = self._processes[index]
        delay = min(0.01, self._poll)  # a local server answers within ~20 ms: poll fast first
        while True:
            if proc.returncode is not None:
                raise DataBackendStartupError(
                    f"RedisDataBackend '{self.name}': redis-server of node {index} exited "
                    f"with code {proc.returncode} before it was ready; its log "
                    f"{self._logs[index]}:\n{self._tail(index)}")
            if await self._ping(ep):
                return
            if time.monotonic() >= deadline:
                raise DataBackendStartupError(
                    f"RedisDataBackend '{self.name}': node {index} did not answer PING within "
                    f"startup_timeout={self._startup_timeout}s; its log {self._logs[index]}:"
                    f"\n{self._tail(index)}")
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._poll)

    def _tail(self, index: int, n: int = 2000) -> str:
        try:
            with open(self._logs[index], "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - n))
                return f.read().decode(errors="replace")
        except (OSError, KeyError):
            return "<no log>"

    async def _do_ready(self) -> bool:
        if any(p.returncode is not None for p in self._processes.values()):
            return False
        return all(await asyncio.gather(*(self._ping(ep) for ep in self._endpoints)))

    async def _do_shutdown(self) -> None:
        await self._stop_all()

    async def _stop_all(self) -> None:
        await asyncio.gather(*(self._stop(p) for p in self._processes.values()),
                             return_exceptions=True)
        self._processes = {}
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM (Redis saves and exits), then SIGKILL after the grace period."""
        try:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), self._grace)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
        finally:
            _LIVE.pop(proc.pid, None)


def _free_port(taken: set[int]) -> int:
    """A free loopback port, none of ``taken`` (the servers of one start differ)."""
    while True:
        port = free_port("127.0.0.1")
        if port not in taken:
            taken.add(port)
            return port


def _endpoint_host(host: str) -> str:
    """What a client of a local server (bound to 127.0.0.1) connects to: the name given
    when it is the loopback's (RHAPSODY's endpoints say ``localhost``), else 127.0.0.1."""
    return host if host in ("localhost", "127.0.0.1") else "127.0.0.1"


def _raise_first(results: list) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


#: servers not shut down yet (pid -> socket folder): ended when the interpreter exits
_LIVE: dict[int, str | None] = {}


@atexit.register
def _end_leftovers() -> None:
    for pid, folder in list(_LIVE.items()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
