"""RedisDataBackend with a real redis-server (Debian's package; .ci/setup.d/60-redis.sh).

The client side speaks RESP over a plain socket (``rhapsody_lab.backends.data._resp``):
RHAPSODY's extras bring no Redis client. A throw-away second local user
(``tests/local_user.py``, root only) tries the socket, the TCP port and the files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import local_user
import pytest

from rhapsody_lab.api import ComputeTask, Session, SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.backends.data import (
    DataBackendNotReadyError,
    DataBackendStartupError,
    DataBackendState,
    DataBackendTerminatedError,
    RedisDataBackend,
    RedisEndpoint,
    _resp,
)

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (apt-get install "
                                 "redis-server; .ci/setup.d/60-redis.sh)")
needs_second_user = pytest.mark.skipif(local_user.missing() is not None,
                                       reason=str(local_user.missing()))


async def _cmd(ep: RedisEndpoint, *cmds: tuple[str, ...], password: str | None = "ep") -> list:
    pw = ep.password if password == "ep" else password
    return await _resp.command(ep.unix_socket or (ep.host, ep.port), *cmds, password=pw)


def _redis_pids() -> dict[int, str]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmd:
            found[int(pid)] = cmd
    return found


@needs_redis
async def test_start_ready_set_get_and_shutdown_leaves_nothing(tmp_path, no_children):
    before = set(_redis_pids())
    backend = RedisDataBackend(work_dir=tmp_path / "data", unix_socket=True)
    with pytest.raises(DataBackendNotReadyError, match=r"await backend\.start"):
        _ = backend.endpoints
    assert await backend.ready() is False
    assert await backend is backend
    assert backend.state is DataBackendState.READY
    (ep,) = backend.endpoints
    assert ep.port == 0 and ep.unix_socket and ep.password
    assert await backend.ready() is True
    assert await _cmd(ep, ("SET", "k", "v"), ("GET", "k"), ("PING",)) == [b"OK", b"v", b"PONG"]
    with pytest.raises(RuntimeError, match="NOAUTH"):  # no password, no data
        await _cmd(ep, ("GET", "k"), password=None)
    with pytest.raises(RuntimeError, match="WRONGPASS"):
        await _cmd(ep, ("GET", "k"), password="not-the-password-at-all")
    assert ep.serialize().startswith("unix://:") and ep.serialize().endswith(ep.unix_socket)
    assert ep.password not in repr(ep) and ep.password not in repr(backend.endpoints)
    assert ep.client_kwargs() == {"unix_socket_path": ep.unix_socket, "password": ep.password}

    # private: 0700 folders, 0600 config, and the password on no command line
    sock_dir = os.path.dirname(ep.unix_socket)
    node = tmp_path / "data" / "node0"
    for d in (sock_dir, tmp_path / "data", node):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.lstat(node / "redis.conf").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(ep.unix_socket).st_mode) & 0o077 == 0
    mine = {p: c for p, c in _redis_pids().items() if p not in before}
    assert len(mine) == 1 and all(ep.password not in c for c in mine.values())

    assert await backend.shutdown() is backend
    assert backend.state is DataBackendState.SHUTDOWN and await backend.ready() is False
    assert not os.path.exists(sock_dir)
    assert set(_redis_pids()) - before == set()
    assert (node / "dump.rdb").exists()  # Redis saved on SIGTERM, into the data folder
    assert stat.S_IMODE(os.lstat(node / "dump.rdb").st_mode) & 0o077 == 0
    await backend.shutdown()  # idempotent
    with pytest.raises(DataBackendTerminatedError, match="create a new backend"):
        await backend.start()


@needs_redis
async def test_session_starts_it_puts_data_under_work_dir_and_closes_it(tmp_path, no_children):
    redis = RedisDataBackend(name="store", unix_socket=True)
    work = tmp_path / "work"
    session = Session([ConcurrentExecutionBackend(), redis], uid="s1", work_dir=work)
    assert list(session.backends) == ["concurrent"] and list(session.data_backends) == ["store"]
    async with session:
        assert redis.state is DataBackendState.READY
        assert redis.work_dir == str(work / "s1.data.store")
        url = redis.endpoints[0].serialize()

        def use_store(url: str) -> bytes:  # a task reaching the store through its endpoint
            path, pw = url.split("@", 1)[1], url.split("@")[0].split(":", 2)[2]
            return asyncio.run(_resp.command(path, ("INCR", "n"), ("INCR", "n"),
                                             password=pw))[-1]

        task = ComputeTask(function=use_store, args=(url,))
        await session.submit_tasks([task])
        assert (await task).return_value == 2  # routed to the execution backend
        with pytest.raises(SessionError, match="already registered"):
            session.add_backend(RedisDataBackend(name="store"))
        session.add_backend(redis)  # the same one again: no-op
        with pytest.raises(SessionError, match="no data backend named 'nope'"):
            session.data_backends["nope"]
    assert redis.state is DataBackendState.SHUTDOWN
    assert (work / "s1.data.store" / "node0" / "redis.log").exists()


@needs_redis
async def test_session_keeps_a_started_backend_running_until_close(tmp_path, no_children):
    redis = await RedisDataBackend(work_dir=tmp_path / "d")
    async with Session([redis], work_dir=tmp_path) as session:
        assert session.data_backends["redis"] is redis and await redis.ready()
        assert redis.work_dir == str(tmp_path / "d")  # the user's choice is kept
    assert redis.state is DataBackendState.SHUTDOWN


@needs_redis
async def test_several_nodes_and_tcp_by_default(tmp_path, no_children):
    async with RedisDataBackend(hosts=["localhost"] * 3, work_dir=tmp_path / "m",
                                unix_socket=True) as multi:
        eps = multi.endpoints
        assert len({e.unix_socket for e in eps}) == 3
        await _cmd(eps[0], ("SET", "only", "here"))
        assert await _cmd(eps[1], ("EXISTS", "only")) == [0]  # independent keyspaces
    # RHAPSODY's default: TCP, a free port per server, the host as named
    async with RedisDataBackend(hosts=["localhost"] * 3, work_dir=tmp_path / "t") as tcp:
        eps = tcp.endpoints
        assert len({e.port for e in eps}) == 3 and all(e.port > 0 for e in eps)
        ep = eps[0]
        assert ep.host == "localhost" and ep.unix_socket is None
        assert ep.serialize() == f"redis://:{ep.password}@localhost:{ep.port}/0"
        assert ep.client_kwargs() == {"host": "localhost", "port": ep.port,
                                      "password": ep.password}
        assert await _cmd(ep, ("PING",)) == [b"PONG"]
        assert await tcp.ready() is True
        with pytest.raises(RuntimeError, match="NOAUTH"):
            await _cmd(ep, ("KEYS", "*"), password=None)
        conf = (tmp_path / "t" / "node0" / "redis.conf").read_text()
        assert f"port {ep.port}" in conf and "bind 127.0.0.1" in conf
    async with RedisDataBackend(hosts=["127.0.0.1"], work_dir=tmp_path / "u") as by_ip:
        (ep,) = by_ip.endpoints
        assert ep.host == "127.0.0.1" and await _cmd(ep, ("PING",)) == [b"PONG"]


@needs_redis
async def test_ready_turns_false_when_the_server_dies(tmp_path, no_children):
    async with RedisDataBackend(work_dir=tmp_path / "d") as backend:
        (proc,) = backend._processes.values()
        proc.kill()
        await proc.wait()
        assert await backend.ready() is False


async def test_redis_server_not_installed_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without redis-server
    backend = RedisDataBackend(work_dir=tmp_path / "d")
    with pytest.raises(DataBackendStartupError, match=r"apt-get install redis-server"):
        await backend.start()
    assert backend.state is DataBackendState.FAILED
    with pytest.raises(SessionError, match="wait must be True or False"):
        await RedisDataBackend().start(wait="yes")


async def test_redis_server_missing_names_the_package(tmp_path):
    backend = RedisDataBackend(redis_server_path=str(tmp_path / "no-redis-server"),
                               work_dir=tmp_path / "d")
    with pytest.raises(DataBackendStartupError, match="install Debian's redis-server package"):
        await backend.start()
    assert backend.state is DataBackendState.FAILED


@needs_redis
async def test_a_server_that_exits_early_shows_its_log(tmp_path, no_children):
    backend = RedisDataBackend(extra_args=["--no-such-option", "1"], work_dir=tmp_path / "d")
    with pytest.raises(DataBackendStartupError, match="exited with code") as err:
        await backend.start()
    assert "no-such-option" in str(err.value)  # the tail of redis.log
    assert backend.state is DataBackendState.FAILED and backend._processes == {}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"hosts": "localhost"}, "hosts"),
    ({"hosts": []}, "hosts"),
    ({"hosts": ["node-a.example"]}, "hosts .*pass cmd="),
    ({"port": 0}, "port"),
    ({"port": "6379"}, "port"),
    ({"port": 7000, "hosts": ["localhost", "localhost"]}, "port would be the same"),
    ({"password": "a-long-enough-pass\\word"}, "password"),
    ({"cmd": "srun redis-server {config}"}, "port must be given with cmd"),
    ({"cmd": "srun redis-server --port {port}", "port": 7000}, "cmd must pass {config}"),
    ({"cmd": "srun {nope} {config}", "port": 7000}, "cmd may use only"),
    ({"extra_args": "--maxmemory 1gb"}, "extra_args must be a list"),
    ({"extra_args": ["--requirepass", "x"]}, "extra_args may not set"),
    ({"password": "short"}, "password must be a str of at least 16"),
    ({"unix_socket": "yes"}, "unix_socket"),
    ({"unix_socket": True, "port": 7000}, "unix_socket is for local"),
    ({"startup_timeout": -1}, "startup_timeout"),
    ({"env": {"A": 1}}, "env"),
    ({"name": "two words"}, "name"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(SessionError, match=field) as err:
        RedisDataBackend(**kwargs)
    assert "RedisDataBackend" in str(err.value)
    if "password" in kwargs:
        assert kwargs["password"] not in str(err.value)


# Run as the other user with the system Python: what can it get from the server?
PROBE = r'''
import json, os, socket, sys
args = json.loads(sys.argv[1])
out = {"uid": os.getuid()}
def attempt(fn):
    try:
        return fn()
    except OSError as exc:
        return type(exc).__name__
def unix():
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(args["socket"])
    s.sendall(b"*1\r\n$4\r\nPING\r\n"); return s.recv(100).decode()
def tcp(cmd):
    s = socket.create_connection(("127.0.0.1", args["port"]), 5)
    s.sendall(cmd); return s.recv(200).decode()
out["root"] = attempt(lambda: os.listdir(args["root"]) and "ok")
out["listdir"] = attempt(lambda: os.listdir(os.path.dirname(args["socket"])) and "ok")
out["unix"] = attempt(unix)
out["conf"] = attempt(lambda: open(args["conf"]).read()[:5])
out["data_dir"] = attempt(lambda: os.listdir(args["data"]) and "ok")
out["tcp_ping"] = attempt(lambda: tcp(b"*1\r\n$4\r\nPING\r\n"))
out["tcp_keys"] = attempt(lambda: tcp(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n"))
print(json.dumps(out))
'''


@needs_redis
@needs_second_user
async def test_another_user_can_neither_connect_nor_read(no_children):
    # a work_dir the other user may enter (mode 0755): the server's own folder must stop it
    shared = tempfile.mkdtemp(prefix="rh-data-")
    os.chmod(shared, 0o755)
    try:
        await _probe_as_other_user(shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


async def _probe_as_other_user(shared: str) -> None:
    async with RedisDataBackend(work_dir=shared, unix_socket=True) as unix_b, \
            RedisDataBackend(unix_socket=False, work_dir=os.path.join(shared, "t")) as tcp_b:
        ep, tep = unix_b.endpoints[0], tcp_b.endpoints[0]
        await _cmd(tep, ("SET", "secret", "value"))
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755  # the user's folder: untouched
        args = json.dumps({"socket": ep.unix_socket, "port": tep.port, "root": shared,
                           "conf": os.path.join(shared, "node0", "redis.conf"),
                           "data": os.path.join(shared, "node0")})
        loop = asyncio.get_running_loop()
        with local_user.other_user() as user:
            done = await loop.run_in_executor(None, lambda: subprocess.run(
                ["runuser", "-u", user, "--", local_user.SYSTEM_PYTHON, "-I", "-c", PROBE,
                 args], capture_output=True, text=True, timeout=60, cwd="/"))
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["uid"] != os.geteuid()
        assert seen["root"] == "ok"  # it can enter the shared folder...
        assert seen["listdir"] == "PermissionError" and seen["unix"] == "PermissionError"
        assert seen["conf"] == "PermissionError" and seen["data_dir"] == "PermissionError"
        assert seen["tcp_ping"].startswith("-NOAUTH"), seen  # TCP answers, but no data
        assert seen["tcp_keys"].startswith("-NOAUTH"), seen


async def test_one_session_at_a_time_and_never_a_dead_backend(tmp_path):
    redis = RedisDataBackend(work_dir=tmp_path / "d")
    first = Session([redis], uid="first", work_dir=tmp_path)
    with pytest.raises(SessionError, match="belongs to session first"):
        Session([redis], work_dir=tmp_path)
    await first.close()  # never started: shut down all the same
    assert redis.state is DataBackendState.SHUTDOWN
    with pytest.raises(SessionError, match="is SHUTDOWN and cannot be started again"):
        Session([redis], work_dir=tmp_path)
    with pytest.raises(SessionError, match="is closed"):
        first.add_backend(RedisDataBackend())


@needs_redis
async def test_cmd_template_and_not_waiting(tmp_path, no_children):
    from rhapsody_lab._net import free_port
    port = free_port()
    backend = RedisDataBackend(cmd="env RHAPSODY_VIA_CMD=1 redis-server {config}", port=port,
                               work_dir=tmp_path / "c", startup_timeout=20)
    async with backend:
        (ep,) = backend.endpoints
        assert (ep.host, ep.port, ep.unix_socket) == ("localhost", port, None)
        assert await _cmd(ep, ("PING",)) == [b"PONG"]
    nowait = await RedisDataBackend(work_dir=tmp_path / "n").start(wait=False)
    try:
        assert nowait.state is DataBackendState.READY  # launched; answers shortly after
        for _ in range(100):
            if await nowait.ready():
                break
            await asyncio.sleep(0.05)
        assert await nowait.ready()
    finally:
        await nowait.shutdown()


LEAVE_RUNNING = r'''
import asyncio, sys
from rhapsody_lab.backends.data import RedisDataBackend
async def main():
    b = await RedisDataBackend(work_dir=sys.argv[1], unix_socket=True)
    print(b.endpoints[0].unix_socket, flush=True)
asyncio.run(main())  # exits without shutdown()
'''


@needs_redis
def test_a_server_never_shut_down_ends_with_the_interpreter(tmp_path):
    before = set(_redis_pids())
    done = subprocess.run([sys.executable, "-c", LEAVE_RUNNING, str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(os.path.dirname(done.stdout.strip()))  # its socket folder
    for _ in range(50):
        left = {p: c for p, c in _redis_pids().items() if p not in before}
        if not left:
            break
        time.sleep(0.1)
    assert not left


@needs_redis
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_a_server_ends_when_its_python_is_killed(tmp_path):
    before = set(_redis_pids())
    code = LEAVE_RUNNING.replace("print(b.endpoints[0].unix_socket, flush=True)",
                                 "print(b.endpoints[0].unix_socket, flush=True)\n"
                                 "    await asyncio.sleep(600)")
    with subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d")],
                          stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
                          ) as p:
        sock = p.stdout.readline().strip()
        assert sock.endswith(".sock") and set(_redis_pids()) - before  # it runs
        p.kill()  # SIGKILL: no atexit, no shutdown()
        p.wait()
    for _ in range(100):
        left = set(_redis_pids()) - before
        if not left:
            break
        time.sleep(0.1)
    assert not left
    assert not os.path.exists(sock)  # it shut down cleanly (SIGTERM), removing its socket
    os.rmdir(os.path.dirname(sock))  # the one thing a killed Python leaves: an empty folder
