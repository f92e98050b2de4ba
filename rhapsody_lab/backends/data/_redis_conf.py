"""RedisDataBackend's arguments, checked, and the private files each server gets.

Each server reads its settings (password included) from a ``redis.conf`` of mode 0600 in
its own data folder (mode 0700), never from its command line, which every user of the
host can read in ``/proc``. A local server listens on the loopback, on a free TCP port
(RHAPSODY's default; the password guards it), or with ``unix_socket=True`` only on a Unix
socket (mode 0700) inside a fresh 0700 folder of this user.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...api.errors import SessionError

__all__ = ["check_args", "config_text", "is_local", "private_dir", "private_socket_dir",
           "write_private"]

#: settings the backend owns: letting ``extra_args`` change them would open the server
_OWNED = ("requirepass", "unixsocket", "unixsocketperm", "port", "bind", "protected-mode",
          "dir", "daemonize", "user", "aclfile", "include")
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin
_WHO = "RedisDataBackend"


def _fail(field: str, got: Any, fix: str) -> SessionError:
    return SessionError(f"{_WHO}: {field} {fix}, got {got!r}")


def is_local(host: str) -> bool:
    """``host`` names this machine (a server there needs no launch command)."""
    me = socket.gethostname()
    return host in ("localhost", "127.0.0.1", "::1", me, me.split(".")[0])


def _number(field: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            value > 0 if positive else value >= 0):
        raise _fail(field, value, "must be a number of seconds > 0")
    return float(value)


def check_args(hosts: Any, port: Any, cmd: Any, redis_server_path: Any, extra_args: Any,
               env: Any, work_dir: Any, password: Any, unix_socket: Any,
               timeouts: Mapping[str, Any]) -> dict[str, Any]:
    """Every argument checked (``SessionError`` naming it and the fix); the clean values."""
    if hosts is None:
        hosts = ["localhost"]
    elif isinstance(hosts, str) or not isinstance(hosts, Sequence) or not hosts or not all(
            isinstance(h, str) and h for h in hosts):
        raise _fail("hosts", hosts, "must be a non-empty list of host names, e.g. "
                    "hosts=['localhost']")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise _fail("port", port, "must be a TCP port number (1-65535) or None")
    if cmd is not None:
        if not isinstance(cmd, str) or not cmd.strip():
            raise _fail("cmd", cmd, "must be a launch command template (a str), e.g. "
                        "'srun --nodelist={host} redis-server {config}'")
        if port is None:
            raise _fail("port", port, "must be given with cmd= (a free port here says "
                        "nothing about the host cmd launches on)")
        if "{config}" not in cmd:
            raise _fail("cmd", cmd, "must pass {config} (the server's private redis.conf, "
                        "which holds its password) to redis-server, e.g. "
                        "'srun --nodelist={host} redis-server {config}'")
        try:
            cmd.format(host="h", port=1, config="c")
        except (KeyError, IndexError, ValueError) as exc:
            raise _fail("cmd", cmd, f"may use only {{host}}, {{port}} and {{config}} ({exc})"
                        ) from None
    else:
        if port is not None and len(hosts) > 1:
            raise _fail("port", port, f"would be the same for {len(hosts)} servers on this "
                        "machine; drop port= (each gets a free one) or use one host")
        remote = [h for h in hosts if not is_local(h)]
        if remote:
            raise _fail("hosts", hosts, f"name other machines ({remote}); pass cmd= to "
                        "launch a server there, e.g. cmd='srun --nodelist={host} "
                        "redis-server {config}', and port=")
    if not isinstance(redis_server_path, str) or not redis_server_path:
        raise _fail("redis_server_path", redis_server_path, "must be a path or command name")
    if isinstance(extra_args, str) or not isinstance(extra_args, Sequence) or not all(
            isinstance(a, str) for a in extra_args):
        raise _fail("extra_args", extra_args, "must be a list of str, e.g. "
                    "['--maxmemory', '1gb']")
    owned = [a for a in extra_args if a.lstrip("-").lower() in _OWNED]
    if owned:
        raise _fail("extra_args", list(extra_args), f"may not set {owned}: the backend owns "
                    "them (password, socket, port and folder keep the server private); use "
                    "password=, port= or work_dir=")
    if env is not None and (not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise _fail("env", env, "must be a dict of str to str")
    if work_dir is not None and (not isinstance(work_dir, str | os.PathLike)
                                 or not os.fspath(work_dir)):
        raise _fail("work_dir", work_dir, "must be a folder path")
    if password is not None and (not isinstance(password, str) or len(password) < 16
                                 or any(c.isspace() or c in '"\'\\' for c in password)):
        raise _fail("password", "<hidden>" if isinstance(password, str) else password,
                    "must be a str of at least 16 characters without spaces, quotes or \\ "
                    "(or None: a random one), e.g. secrets.token_urlsafe(32)")
    if unix_socket is None:
        unix_socket = False  # RHAPSODY's default: TCP, a free port per server
    elif not isinstance(unix_socket, bool):
        raise _fail("unix_socket", unix_socket, "must be True, False or None (automatic)")
    elif unix_socket and (port is not None or cmd is not None):
        raise _fail("unix_socket", unix_socket, "is for local servers without port= or cmd=; "
                    "drop unix_socket=True or port=/cmd=")
    clean = {k: _number(k, v) for k, v in timeouts.items()}
    return dict(hosts=list(hosts), unix_socket=unix_socket,
                work_dir=None if work_dir is None else os.path.abspath(os.fspath(work_dir)),
                **clean)


def config_text(*, data_dir: str, password: str, port: int, socket_path: str | None,
                bind: str) -> str:
    """The private ``redis.conf`` of one server."""
    lines = ["# written by rhapsody_lab RedisDataBackend; mode 0600, holds the password",
             f"port {port}", f"dir {data_dir}", f'requirepass "{password}"',
             "protected-mode yes", "daemonize no", 'logfile ""']
    if port:
        lines.append(f"bind {bind}")
    if socket_path is not None:
        lines += [f"unixsocket {socket_path}", "unixsocketperm 700"]
    return "\n".join(lines) + "\n"


def private_dir(path: str) -> str:
    """``path`` made (with parents) and closed to everyone but this user (mode 0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise SessionError(f"{_WHO}: {path!r} is not a folder of this user; pass another "
                           "work_dir=")
    os.chmod(path, 0o700)
    return path


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (mode 0600 from creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def private_socket_dir() -> str:
    """A fresh 0700 folder for the Unix sockets, short enough for a socket address."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and len(xdg) < 60:
        base = Path(xdg) / "rhapsody_lab"
    else:
        base = Path(tempfile.gettempdir()) / f"rhapsody_lab-{os.geteuid()}"
    try:
        base.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SessionError(f"{_WHO}: {base} is not a folder of mode 0700 owned by uid "
                           f"{os.geteuid()}: refusing to put a Redis socket there (remove "
                           "it, or set TMPDIR/XDG_RUNTIME_DIR elsewhere)")
    made = tempfile.mkdtemp(prefix="redis-", dir=base)
    if len(os.fsencode(made)) + len("/node000.sock") > _MAX_SOCKET_PATH:
        os.rmdir(made)
        raise SessionError(f"{_WHO}: the socket folder {made!r} is too long for a socket "
                           "address; set TMPDIR or XDG_RUNTIME_DIR to a shorter folder")
    return made
