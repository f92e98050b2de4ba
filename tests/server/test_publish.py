"""The kernel side: a session announces itself in the registry while it lives.

A real kernel (jupyter_client) runs ``%load_ext rhapsody_lab`` / ``%rhapsody start``; its
entry appears with the kernel id, goes away with ``%rhapsody stop``, and a killed kernel's
leftover entry is pruned by the reader.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from jupyter_client.manager import KernelManager

from rhapsody_lab.api import ComputeTask, Session, SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.notebook.publish import Publisher
from rhapsody_lab.server.registry import ENV_BASE_URL, ENV_DIR, read_entries, write_entry


def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(0.1)


def _run(kc, code: str) -> str:
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["status"]


def test_a_kernel_session_is_announced_and_withdrawn(tmp_path):
    registry = tmp_path / "registry"
    env = dict(os.environ, **{ENV_DIR: str(registry)})
    env.pop(ENV_BASE_URL, None)  # no server extension: listed, but no dashboard started
    kid = str(uuid.uuid4())  # a Jupyter server names connection files kernel-<id>.json
    km = KernelManager(kernel_name="python3",
                       connection_file=str(tmp_path / f"kernel-{kid}.json"))
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        _run(kc, "%load_ext rhapsody_lab\nfrom rhapsody_lab import ComputeTask")
        _run(kc, "%rhapsody start --name k1 --workers 2\n"
                 "await session.submit_tasks([ComputeTask(executable='/bin/true')])")
        entry = _wait_for(lambda: [e for e in read_entries(registry).values()
                                   if e["counts"].get("DONE") == 1])[0]
        assert entry["uid"] == "k1" and entry["kernel_id"] == kid
        assert entry["backends"]["concurrent"]["capacity"] == 2
        assert entry["backends"]["concurrent"]["state"] == "RUNNING"
        assert entry["backends"]["concurrent"]["pilot"] is None  # only RP's have one
        assert entry["dashboard"] is None and entry["pid"] != os.getpid()
        _run(kc, "%rhapsody stop")
        assert read_entries(registry) == {}
        assert list(registry.glob("*.json")) == []

        # a Session built in a cell is announced once adopted by the magics
        _run(kc, "from rhapsody_lab import Session\n"
                 "from rhapsody_lab.backends import ConcurrentExecutionBackend\n"
                 "s3 = Session([ConcurrentExecutionBackend()], uid='k3')\n"
                 "await s3.start()")
        _run(kc, "%rhapsody status --attach s3")
        _wait_for(lambda: [e for e in read_entries(registry).values() if e["uid"] == "k3"])
        _run(kc, "%rhapsody stop")
        assert read_entries(registry) == {}

        # a kernel that dies leaves its file behind: the reader ignores and prunes it
        _run(kc, "%rhapsody start --name k2")
        _wait_for(lambda: read_entries(registry))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert len(list(registry.glob("*.json"))) == 1
    assert read_entries(registry) == {}
    assert list(registry.glob("*.json")) == []


async def test_publisher_writes_counts_and_removes_its_entry_on_close(tmp_path,
                                                                      monkeypatch):
    monkeypatch.delenv(ENV_BASE_URL, raising=False)
    async with Session([ConcurrentExecutionBackend(max_workers=1)],
                       work_dir=tmp_path) as session:
        publisher = Publisher(session, directory=tmp_path, interval=0.05).start()
        assert publisher.server is None and not publisher.wants_dashboard
        entry = json.loads((tmp_path / f"{publisher.key}.json").read_text())
        assert entry["uid"] == session.uid and entry["counts"] == {}
        tasks = [ComputeTask(function=int) for _ in range(5)]
        for f in await session.submit_tasks(tasks):
            await f
        session.get_statistics()
        _wait_for(lambda: json.loads((tmp_path / f"{publisher.key}.json").read_text())
                  ["counts"] == {"DONE": 5}, 10)
    # the session closed: the publisher's thread notices and withdraws the entry
    _wait_for(lambda: not (tmp_path / f"{publisher.key}.json").exists(), 10)
    publisher.stop()


def test_bad_input_is_refused_with_rhapsody_errors(tmp_path):
    session = Session([ConcurrentExecutionBackend()], work_dir=tmp_path)
    with pytest.raises(SessionError, match="interval"):
        Publisher(session, interval=0)
    with pytest.raises(SessionError, match="key"):
        write_entry({"key": "../escape", "pid": os.getpid()}, tmp_path)
    with pytest.raises(SessionError, match="key"):
        write_entry({"pid": os.getpid()}, tmp_path)
