"""RadicalExecutionBackend against a real RADICAL-Pilot session on ``local.localhost``.

One pilot (with raptor) serves the module: its event loop runs on a thread of its own, and
each test hands it a coroutine. The last test shuts it down and checks that no process of
the RP session is left.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

pytest.importorskip("radical.pilot", reason="radical.pilot is not installed "
                    "(pip install 'rhapsody_lab[radical]')")

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import RadicalExecutionBackend
from rhapsody_lab.backends._rp_env import session_pids

pytestmark = pytest.mark.timeout(300)


def add(a, b=0):
    print("adding")
    return a + b


def boom():
    raise ValueError("no luck")


class _Loop:
    """An event loop on a thread, shared by the module's tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 240):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def rp(tmp_path_factory):
    """(loop, session, backend): one pilot of 2 cores with one raptor master and worker."""
    work = tmp_path_factory.mktemp("rp")
    lines: list[str] = []
    environ = dict(os.environ)
    lp = _Loop()
    backend = RadicalExecutionBackend({"resource": "local.localhost", "cores": 2,
                                       "runtime": 15},
                                      {"masters": [{"ranks": 1, "workers": [{"ranks": 1}]}]},
                                      progress=lines.append)

    async def start():
        session = Session(backends=[backend], work_dir=str(work))
        await backend
        return session
    session = lp.run(start(), timeout=280)
    backend.test_lines = lines
    backend.test_environ = environ
    yield lp, session, backend
    lp.run(backend.shutdown(), timeout=120)
    lp.close()


def _wait(tasks, session, lp, timeout=120):
    lp.run(session.wait_tasks(tasks, timeout=timeout), timeout + 10)


def test_start_up_progress_and_sandbox_under_work_dir(rp):
    _lp, session, backend = rp
    assert backend.pilot_state == "PMGR_ACTIVE"
    assert any("PMGR_ACTIVE" in line for line in backend.test_lines)
    assert os.path.isdir(os.path.join(session.work_dir, ".rhapsody-radical", "sandbox")) \
        or os.path.isdir(os.path.join(backend._work_dir, ".rhapsody-radical", "sandbox"))
    assert backend.capacity() == 2


def test_the_sidebar_entry_shows_the_pilot_state(rp, tmp_path):
    from rhapsody_lab.notebook.publish import Publisher
    _, session, backend = rp
    entry = Publisher(session, directory=tmp_path).entry()["backends"][backend.name]
    assert entry["pilot"] == "PMGR_ACTIVE" and entry["state"] == "RUNNING"
    assert entry["capacity"] == 2 and entry["kind"] == "RadicalExecutionBackend"


def test_executables_stdout_and_exit_codes(rp):
    lp, session, _backend = rp
    tasks = [ComputeTask(executable="/bin/echo", arguments=["hello", "rp"]),
             ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo err >&2; "
                                                               "exit 3"]),
             ComputeTask(executable="/nonexistent/prog")]
    lp.run(session.submit_tasks(tasks))
    _wait(tasks, session, lp)
    ok, bad, missing = tasks
    assert ok.state == "DONE" and ok.stdout == "hello rp\n" and ok.exit_code == 0
    assert bad.state == "FAILED" and bad.exit_code == 3
    assert bad.stdout == "out\n" and "err" in bad.stderr
    assert missing.state == "FAILED" and missing.exit_code == 127
    assert "No such file" in missing.stderr


def test_function_tasks_through_raptor(rp):
    lp, session, _backend = rp
    tasks = [ComputeTask(function=add, args=(i,), kwargs={"b": 10}) for i in range(5)]
    failing = ComputeTask(function=boom)
    lp.run(session.submit_tasks([*tasks, failing]))
    _wait([*tasks, failing], session, lp)
    assert [t.state for t in tasks] == ["DONE"] * 5
    assert [t.return_value for t in tasks] == [10, 11, 12, 13, 14]
    assert "adding" in tasks[0].stdout
    assert failing.state == "FAILED" and "no luck" in str(failing.exception)


def test_running_is_visible_and_cancel_ends_the_process(rp, tmp_path):
    lp, session, backend = rp
    pidfile = tmp_path / "pid"
    task = ComputeTask(executable="/bin/sh",
                       arguments=["-c", f"echo $$ > {pidfile}; exec sleep 300"])
    lp.run(session.submit_tasks([task]))
    deadline = time.time() + 60
    while time.time() < deadline and not (task.state == "RUNNING" and pidfile.exists()
                                          and pidfile.read_text().strip()):
        time.sleep(0.1)
    assert task.state == "RUNNING"
    pid = int(pidfile.read_text())
    assert os.path.exists(f"/proc/{pid}")
    assert lp.run(backend.cancel_task(task.uid)) is True
    _wait([task], session, lp, 60)
    assert task.state == "CANCELED"
    deadline = time.time() + 15
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "the canceled task's process still runs"


@pytest.mark.slow
def test_thousand_true_tasks_all_done(rp):
    lp, session, _backend = rp
    tasks = [ComputeTask(executable="/bin/true") for _ in range(1000)]
    t0 = time.time()
    lp.run(session.submit_tasks(tasks))
    _wait(tasks, session, lp, 200)
    assert [t.state for t in tasks].count("DONE") == 1000
    print(f"1000 /bin/true in {time.time() - t0:.1f} s")


def test_zz_shutdown_leaves_no_process_of_the_session(rp):
    lp, session, backend = rp
    sid = backend.session_uid
    assert session_pids(sid), "the RP session should have processes before shutdown"
    task = ComputeTask(executable="/bin/sleep", arguments=["300"])
    lp.run(session.submit_tasks([task]))
    lp.run(backend.shutdown(), timeout=120)
    assert task.state == "CANCELED"
    deadline = time.time() + 10
    while time.time() < deadline and session_pids(sid):
        time.sleep(0.2)
    assert session_pids(sid) == []
    # the kernel's environment is as it was before the backend started (no VIRTUAL_ENV,
    # PATH or RADICAL_* of RP's left behind)
    keys = set(backend.test_environ) | set(os.environ)
    changed = {k for k in keys if os.environ.get(k) != backend.test_environ.get(k)
               and (k in ("PATH", "VIRTUAL_ENV") or k.startswith("RADICAL_"))}
    assert not changed, changed


def _rhapsody_docs_snippet() -> str:
    """RHAPSODY 0.6.0's RP backend example (docs/getting-started/configuration.md of its
    sdist, fetched once into ~/.cache/rhapsody_lab/), its import path made ours."""
    import re
    import subprocess
    import sys
    import tarfile
    cache = os.path.expanduser("~/.cache/rhapsody_lab/rhapsody-py-0.6.0")
    doc = os.path.join(cache, "rhapsody_py-0.6.0", "docs", "getting-started",
                       "configuration.md")
    if not os.path.exists(doc):
        os.makedirs(cache, exist_ok=True)
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              "--no-binary", ":all:", "rhapsody-py==0.6.0", "-d", cache],
                             capture_output=True, text=True, timeout=120)
        sdists = [f for f in os.listdir(cache) if f.endswith(".tar.gz")]
        if not sdists:
            pytest.skip(f"cannot download rhapsody-py 0.6.0's sdist: {got.stderr[-300:]}")
        with tarfile.open(os.path.join(cache, sdists[0])) as tar:
            tar.extractall(cache, members=[m for m in tar.getmembers()
                                           if m.name.endswith("configuration.md")],
                           filter="data")
    with open(doc) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (snippet,) = [b for b in blocks if "RadicalExecutionBackend(" in b]
    return snippet


@pytest.mark.slow
def test_rhapsody_docs_example_runs_with_only_the_import_changed(tmp_path):
    snippet = _rhapsody_docs_snippet()
    assert '"resource": "local.localhost"' in snippet
    # the docs show the call alone; its import (rhapsody.backends -> rhapsody_lab.backends)
    code = "from rhapsody_lab.backends import RadicalExecutionBackend\nbackend = " + \
        snippet.strip()
    scope: dict = {}
    exec(compile(code, "rhapsody-docs-configuration.md", "exec"), scope)
    backend = scope["backend"]

    async def run():
        async with Session(backends=[backend], work_dir=str(tmp_path)) as session:
            task = ComputeTask(executable="/bin/echo", arguments=["from the docs"])
            await session.submit_tasks([task])
            await session.wait_tasks([task], timeout=120)
            return task, backend.session_uid
    task, sid = asyncio.run(asyncio.wait_for(run(), 280))
    assert task.state == "DONE" and task.stdout == "from the docs\n"
    assert backend.capacity() == 128  # the docs' cores (local.localhost fakes them)
    assert session_pids(sid) == []
    # this session's RP state and sandbox went under its own work dir (not the first one's)
    assert os.path.isdir(tmp_path / ".rhapsody-radical" / sid)
    assert os.path.isdir(tmp_path / ".rhapsody-radical" / "sandbox" / "radical.pilot.sandbox"
                         / sid)


def test_policy_type_radical_and_registry_names():
    from rhapsody_lab.backends import get_backend
    from rhapsody_lab.backends.execution.radical_pilot import RadicalExecutionBackend as Path
    from rhapsody_lab.policy.build import session_parts
    from rhapsody_lab.resources import Allocation
    assert Path is RadicalExecutionBackend
    assert type(get_backend("radical_pilot")) is RadicalExecutionBackend
    policy = {"backends": {"rp": {"type": "radical", "cores": 3}}, "default": "rp"}
    (backend,), _router = session_parts(policy, Allocation(("n0",), (4,), (0,), "local"))
    assert isinstance(backend, RadicalExecutionBackend) and backend.name == "rp"
    assert backend.resources["cores"] == 3 and backend.raptor_mode
    with pytest.raises(Exception, match="resources"):
        RadicalExecutionBackend(resources="local.localhost")
