"""Who can read a dashboard server: its owner only.

A real Bokeh server per test; a real second local user (``tests/local_user.py``, root
only) tries its Unix socket, its TCP page and its websocket and must get nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import local_user
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from rhapsody_lab import dashboard
from rhapsody_lab.api import Session, SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend

needs_second_user = pytest.mark.skipif(local_user.missing() is not None,
                                       reason=str(local_user.missing()))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def _unix_get(path: str, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _ws_first_message(url: str, token: str, origin: str) -> str | None:
    """The first message of Bokeh's websocket protocol (None: closed without one)."""
    ws_url = url.replace("http://", "ws://").split("?")[0] + "/ws"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Origin": origin}),
                                   subprotocols=["bokeh", token])
    try:
        return await asyncio.wait_for(conn.read_message(), 20)
    finally:
        conn.close()


def _token(page: str) -> str:
    return re.search(r'"token"\s*:\s*"([^"]+)"', page).group(1)


@pytest.fixture
def short_tmp():
    """A short private temporary directory (socket paths must fit 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _session(tmp_path: Path) -> Session:
    return Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path / "work")


@needs_second_user
async def test_another_user_cannot_reach_a_unix_socket_dashboard(tmp_path):
    async with _session(tmp_path) as session:
        server = dashboard.serve(session, unix_socket=True, plots=["task-states"])
        try:
            path = server.socket_path
            directory = os.lstat(os.path.dirname(path))
            assert stat.S_IMODE(directory.st_mode) == 0o700
            assert directory.st_uid == os.geteuid()
            assert server.port == 0 and server.urls["task-states"].startswith("http+unix://")
            loop = asyncio.get_running_loop()
            code, body = await loop.run_in_executor(None, _unix_get, path, "/task-states")
            assert code == 200 and b"bokeh" in body.lower()  # the owner reads it

            with local_user.other_user() as user:
                seen = await loop.run_in_executor(None, lambda: local_user.probe(
                    user, socket=path))
            assert seen["uid"] != os.geteuid()
            assert seen["unix"] == {"listdir": "PermissionError",
                                    "connect": "PermissionError"}, seen
        finally:
            server.stop()
        assert not os.path.exists(os.path.dirname(path))  # stop() removes its directory


@needs_second_user
async def test_another_user_gets_nothing_from_the_loopback_dashboard(tmp_path):
    async with _session(tmp_path) as session:
        server = dashboard.serve(session, plots=["task-states"])  # the default: 127.0.0.1
        try:
            url = server.urls["task-states"]
            loop = asyncio.get_running_loop()
            code, page = await loop.run_in_executor(None, _get, url)
            assert code == 200  # the owner, with the signed URL
            origin = f"http://127.0.0.1:{server.port}"
            ack = await _ws_first_message(url, _token(page), origin)
            assert json.loads(ack)["msgtype"] == "ACK"

            parts = urlsplit(url)
            with local_user.other_user() as user:
                seen = await loop.run_in_executor(None, lambda: local_user.probe(
                    user, tcp=("127.0.0.1", server.port, parts.path)))
            tcp = seen["tcp"]
            assert tcp["page"] == 403 and not tcp["page_has_token"], seen
            assert tcp["unsigned_id"] == 403, seen
            assert tcp["ws"].get("first_opcode") not in (1, 2), seen  # no Bokeh message
        finally:
            server.stop()


async def test_a_non_loopback_address_needs_a_secret_key(tmp_path):
    async with _session(tmp_path) as session:
        with pytest.raises(SessionError, match="secret_key"):
            dashboard.serve(session, address="0.0.0.0")
        with pytest.raises(SessionError, match="at least 32"):
            dashboard.serve(session, address="0.0.0.0", secret_key="short")
        with pytest.raises(SessionError, match="secret_key is for TCP"):
            dashboard.serve(session, unix_socket=True, secret_key=secrets.token_urlsafe(32))

        key = secrets.token_urlsafe(32)
        server = dashboard.serve(session, address="0.0.0.0", secret_key=key,
                                 plots=["task-states"])
        try:
            url = server.urls["task-states"].replace("0.0.0.0", "127.0.0.1")
            loop = asyncio.get_running_loop()
            code, page = await loop.run_in_executor(None, _get, url)
            assert code == 200 and "bokeh" in page.lower()
            origin = f"http://localhost:{server.port}"
            assert json.loads(await _ws_first_message(url, _token(page), origin)
                              )["msgtype"] == "ACK"

            from bokeh.util.token import generate_jwt_token, generate_session_id
            plain = url.split("?")[0]
            assert (await loop.run_in_executor(None, _get, plain))[0] == 403
            other = generate_session_id(secret_key=secrets.token_bytes(32), signed=True)
            assert (await loop.run_in_executor(
                None, _get, f"{plain}?bokeh-session-id={other}"))[0] == 403
            # a token made without the key: the websocket closes before Bokeh says anything
            forged = generate_jwt_token(generate_session_id(signed=False), signed=False)
            assert await _ws_first_message(url, forged, origin) is None
        finally:
            server.stop()


async def test_a_unix_socket_only_in_a_private_directory(tmp_path, short_tmp, monkeypatch):
    async with _session(tmp_path) as session:
        tmp_path = short_tmp
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        shared.chmod(0o755)
        with pytest.raises(SessionError, match="mode 0700"):
            dashboard.serve(session, unix_socket=shared / "bokeh.sock")
        assert not (shared / "bokeh.sock").exists()
        with pytest.raises(SessionError, match="unix_socket must be"):
            dashboard.serve(session, unix_socket=5)

        # someone made our socket directory first (here: mode 0755): refused, not used
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        base = Path(tmp_path) / f"rhapsody_lab-{os.geteuid()}"
        base.mkdir(mode=0o755)
        base.chmod(0o755)
        with pytest.raises(SessionError, match="mode 0700 owned by"):
            dashboard.serve(session, unix_socket=True)
        if os.geteuid() == 0:  # owned by another uid, mode 0700
            base.chmod(0o700)
            os.chown(base, 65534, 65534)
            with pytest.raises(SessionError, match="mode 0700 owned by"):
                dashboard.serve(session, unix_socket=True)
            os.chown(base, 0, 0)
        base.chmod(0o700)  # ours and private: used
        server = dashboard.serve(session, unix_socket=True, plots=["latency"])
        try:
            assert Path(server.socket_path).parent.parent == base
            assert stat.S_ISSOCK(os.lstat(server.socket_path).st_mode)
        finally:
            server.stop()


async def test_the_socket_directory_is_under_a_private_xdg_runtime_dir(tmp_path, short_tmp,
                                                                      monkeypatch):
    async with _session(tmp_path) as session:
        tmp_path = short_tmp
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        server = dashboard.serve(session, unix_socket=True, plots=["latency"])
        try:
            assert Path(server.socket_path).parent.parent == runtime / "rhapsody_lab"
        finally:
            server.stop()
        runtime.chmod(0o755)  # not private: not used, the private tmp dir is
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        server = dashboard.serve(session, unix_socket=True, plots=["latency"])
        try:
            assert (Path(server.socket_path).parent.parent
                    == tmp_path / f"rhapsody_lab-{os.geteuid()}")
        finally:
            server.stop()
        deep = tmp_path / ("d" * 100)
        deep.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(deep))
        with pytest.raises(SessionError, match="too long"):
            dashboard.serve(session, unix_socket=True, plots=["latency"])
        assert list((deep / f"rhapsody_lab-{os.geteuid()}").iterdir()) == []
