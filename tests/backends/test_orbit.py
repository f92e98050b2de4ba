"""OrbitExecutionBackend against a real ORBIT broker and endpoint on 127.0.0.1.

The module fixture starts ``radical.orbit``'s broker (TLS with a self-signed certificate,
token auth) and one rhapsody_lab endpoint (``rhapsody_lab.backends.orbit_endpoint``,
``concurrent`` backend remotely); tasks go through the broker to that process and back.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time

import pytest

from rhapsody_lab.api import (
    BackendError,
    ComputeTask,
    Session,
    SessionError,
    TaskExecutionError,
)
from rhapsody_lab.backends import get_backend
from rhapsody_lab.backends.execution.orbit import OrbitExecutionBackend
from rhapsody_lab.backends.registry import BackendRegistry

HAVE_ORBIT = importlib.util.find_spec("radical.orbit") is not None
needs_orbit = pytest.mark.skipif(not HAVE_ORBIT, reason="radical.orbit is not installed "
                                 "(pip install 'rhapsody-lab[orbit]')")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not HAVE_ORBIT:
        pytest.skip("radical.orbit is not installed (pip install 'rhapsody-lab[orbit]')")
    from orbit_site import OrbitSite
    site = OrbitSite(tmp_path_factory.mktemp("orbit"))
    try:
        site.start_broker()
        site.start_endpoint("lab-node")
        yield site
    finally:
        site.stop()


def _backend(site, **kwargs) -> OrbitExecutionBackend:
    kwargs.setdefault("endpoint_name", "lab-node")
    return OrbitExecutionBackend(broker_url=site.url, cert=site.cert, token=site.token,
                                 backends=["concurrent"], start_timeout=20, init_timeout=60,
                                 **kwargs)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _boom():
    raise ValueError("remote boom")


# -- construction ----------------------------------------------------------------------
def test_constructed_with_rhapsodys_arguments():
    backend = OrbitExecutionBackend(broker_url="https://127.0.0.1:8000", endpoint_name="hpc",
                                    backends=["dragon_v3"], batch_window=0, batch_limit=8,
                                    start_timeout=5, init_timeout=5)
    assert backend.name == "orbit" and backend.remote_backends == ["dragon_v3"]
    assert BackendRegistry.get_backend_class("orbit") is OrbitExecutionBackend
    assert isinstance(get_backend("orbit", endpoint_name="x"), OrbitExecutionBackend)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"broker_url": "ftp://x"}, "broker_url"),
    ({"endpoint_name": ""}, "endpoint_name"),
    ({"backends": []}, "backends"),
    ({"batch_window": -1}, "batch_window"),
    ({"batch_limit": 0}, "batch_limit"),
    ({"start_timeout": 0}, "start_timeout"),
    ({"session_kwargs": [1]}, "session_kwargs"),
    ({"cert": ""}, "cert"),
])
def test_bad_argument_is_named(kwargs, field):
    with pytest.raises(SessionError, match=field):
        OrbitExecutionBackend(**kwargs)


@needs_orbit
async def test_missing_url_or_certificate_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.radical/orbit/ files
    for var in ("RADICAL_ORBIT_BROKER_URL", "RADICAL_ORBIT_BROKER_CERT",
                "RADICAL_ORBIT_BROKER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BackendError, match=r"\(no broker_url\): Broker URL required"):
        await OrbitExecutionBackend(start_timeout=1)
    with pytest.raises(BackendError, match=r"broker https://127\.0\.0\.1:9: TLS cert required"):
        await OrbitExecutionBackend(broker_url="https://127.0.0.1:9", start_timeout=1)


@needs_orbit
async def test_session_refuses_an_unreachable_broker(site):
    backend = OrbitExecutionBackend(broker_url="https://127.0.0.1:9", cert=site.cert,
                                    token=site.token, start_timeout=1)
    with pytest.raises(BackendError, match=r"could not register with the ORBIT broker "
                       r"https://127.0.0.1:9"):
        async with Session(backends=[backend]) as session:
            await session.submit_tasks([ComputeTask(function=abs, args=(-2,))])
    assert await backend.state() == "FAILED"


# -- through a real broker -------------------------------------------------------------
async def test_functions_and_executables_round_trip(site):
    backend = _backend(site, batch_window=0.05, batch_limit=16)
    tasks = [ComputeTask(function=pow, args=(2, i)) for i in range(40)]
    echo = ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo err >&2"])
    async with Session(backends=[backend]) as session:
        assert backend.endpoint_name == "lab-node"
        await session.submit_tasks([*tasks, echo])
        await session.wait_tasks([*tasks, echo], timeout=60)
        counts = session.get_statistics()["counts"]
    assert [t.return_value for t in tasks] == [2 ** i for i in range(40)]
    assert {t.state for t in tasks} == {"DONE"} and counts["DONE"] == 41
    assert (echo.state, echo.exit_code, echo.stdout, echo.stderr) == ("DONE", 0, "out\n",
                                                                      "err\n")


async def test_failures_come_back_failed_with_the_reason(site):
    async with Session(backends=[_backend(site, batch_window=0)]) as session:
        fn = ComputeTask(function=_boom)
        exe = ComputeTask(executable="/bin/sh", arguments=["-c", "echo bad >&2; exit 7"])
        missing = ComputeTask(executable="/no/such/program")
        await session.submit_tasks([fn, exe, missing])
        await session.wait_tasks([fn, exe, missing], timeout=60)
    assert fn.state == "FAILED" and "remote boom" in str(fn.exception)
    assert "ValueError" in fn.stderr
    assert (exe.state, exe.exit_code) == ("FAILED", 7)
    assert isinstance(exe.exception, TaskExecutionError) and "bad" in str(exe.exception)
    assert missing.state == "FAILED" and "/no/such/program" in (missing.stderr +
                                                                 str(missing.exception))


async def test_cancel_ends_the_remote_process(site, tmp_path):
    pidfile = tmp_path / "pid"
    sleeper = ComputeTask(executable="/bin/sh",
                          arguments=["-c", f"echo $$ > {pidfile}; exec sleep 60"])
    async with Session(backends=[_backend(site, batch_window=0)]) as session:
        await session.submit_tasks([sleeper])
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.05)
        pid = int(pidfile.read_text())
        assert await session.cancel_task(sleeper) is True
        await session.wait_tasks([sleeper], timeout=10)
        assert sleeper.state == "CANCELED"
        assert _gone(pid, 10), "the canceled task's process still runs on the endpoint"
        later = ComputeTask(function=abs, args=(-3,))
        await session.submit_tasks([later])
        await session.wait_tasks([later], timeout=30)
        assert later.return_value == 3


async def test_cancel_before_send_and_shutdown_leave_nothing_running(site, tmp_path):
    pidfile = tmp_path / "pid"
    backend = _backend(site, batch_window=30)  # the buffer is sent in 30 s, if ever
    async with Session(backends=[backend]) as session:
        held = ComputeTask(function=abs, args=(-1,))
        await session.submit_tasks([held])
        assert await session.cancel_task(held) is True
        assert held.state == "CANCELED" and "before it was sent" in held.stderr
    running = ComputeTask(executable="/bin/sh",
                          arguments=["-c", f"echo $$ > {pidfile}; exec sleep 60"])
    session = Session(backends=[_backend(site, batch_window=0)])
    await session.submit_tasks([running])
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    await session.close()
    assert running.state == "CANCELED"
    assert _gone(int(pidfile.read_text()), 10), "shutdown left the remote process running"


async def test_endpoint_is_chosen_and_a_bad_remote_backend_is_named(site):
    chosen = _backend(site, endpoint_name=None)
    async with Session(backends=[chosen]) as session:
        assert chosen.endpoint_name == "lab-node"
        t = ComputeTask(function=divmod, args=(7, 2))
        await session.submit_tasks([t])
        await session.wait_tasks([t], timeout=30)
        assert t.return_value == [3, 1]  # ORBIT's JSON wire: a tuple comes back a list
    bad = OrbitExecutionBackend(broker_url=site.url, cert=site.cert, token=site.token,
                                endpoint_name="lab-node", backends=["no_such_backend"])
    with pytest.raises(BackendError, match="no_such_backend"):
        await bad
    with pytest.raises(BackendError, match="'elsewhere' not in topology"):
        await _backend(site, endpoint_name="elsewhere")


@pytest.mark.slow
async def test_a_lost_endpoint_fails_its_tasks(site):
    await asyncio.to_thread(site.start_endpoint, "doomed")
    backend = _backend(site, endpoint_name="doomed", batch_window=0)
    async with Session(backends=[backend]) as session:
        t = ComputeTask(executable="/bin/sleep", arguments=["60"])
        await session.submit_tasks([t])
        await asyncio.sleep(1)
        site.kill_endpoint("doomed")
        await session.wait_tasks([t], timeout=40)  # the broker's grace is 10 s
    assert t.state == "FAILED" and "'doomed' left the broker" in t.stderr
    assert isinstance(t.exception, BackendError)


@pytest.mark.slow
async def test_a_dead_broker_fails_live_tasks_and_close_returns(tmp_path, monkeypatch):
    if not HAVE_ORBIT:
        pytest.skip("radical.orbit is not installed (pip install 'rhapsody-lab[orbit]')")
    import signal

    from orbit_site import OrbitSite

    from rhapsody_lab.backends import _orbit_link
    monkeypatch.setattr(_orbit_link, "PROBE_EVERY", 1.0)
    monkeypatch.setattr(_orbit_link, "LOST_AFTER", 5.0)
    own = OrbitSite(tmp_path)
    try:
        await asyncio.to_thread(own.start_broker)
        await asyncio.to_thread(own.start_endpoint, "lab-node")
        backend = _backend(own, batch_window=0)
        session = Session(backends=[backend])
        healthy = ComputeTask(executable="/bin/sleep", arguments=["7"])  # past LOST_AFTER:
        await session.submit_tasks([healthy])  # a broker that answers is never lost
        await session.wait_tasks([healthy], timeout=40)
        assert healthy.state == "DONE", healthy.stderr
        t = ComputeTask(executable="/bin/sleep", arguments=["60"])
        await session.submit_tasks([t])
        await asyncio.sleep(1)
        os.killpg(own.broker.pid, signal.SIGKILL)  # the broker dies; the endpoint lives
        own.broker.wait(10)
        own.broker = None
        await session.wait_tasks([t], timeout=40)
        assert t.state == "FAILED" and "has not answered for" in t.stderr, t.stderr
        assert isinstance(t.exception, BackendError)
        started = time.monotonic()
        await asyncio.wait_for(session.close(), 30)  # the session is not held by it
        assert time.monotonic() - started < 30
    finally:
        await asyncio.to_thread(own.stop)
