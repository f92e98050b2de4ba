"""Services in a session: a real HTTP server started, used by tasks, stopped on close."""

from __future__ import annotations

import socket
import sys

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import BackendError, SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend


def fetch(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_service_is_ready_used_by_tasks_and_stopped_on_close(tmp_path, no_children):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    session = Session([ConcurrentExecutionBackend()], work_dir=tmp_path)
    await session.start()
    svc = await session.start_service(
        "files", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        ready_url=url, endpoint=url, startup_timeout=30)
    assert session.get_service("files") is svc and svc.endpoint == url
    task = ComputeTask(function=fetch, args=(svc.endpoint,))
    await session.submit_tasks([task])
    assert (await task).return_value == 200
    with pytest.raises(BackendError, match="already"):
        await session.start_service("files", [sys.executable, "-c", "pass"])
    await session.close()
    assert svc.state != "READY" and not svc.is_alive()


async def test_bad_service_input_and_a_service_that_never_gets_ready(tmp_path):
    async with Session([ConcurrentExecutionBackend()], work_dir=tmp_path) as session:
        with pytest.raises(SessionError, match="list of strings"):
            await session.start_service("x", "python -m http.server")
        with pytest.raises(BackendError) as err:
            await session.start_service(
                "dies", [sys.executable, "-c", "print('boom-at-start'); raise SystemExit(3)"],
                ready_url=f"http://127.0.0.1:{free_port()}/", startup_timeout=20)
        assert "boom-at-start" in str(err.value)
        with pytest.raises(BackendError, match="no service named"):
            session.get_service("nope")
