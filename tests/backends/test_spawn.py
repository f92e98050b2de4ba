"""The lean spawn path (``backends/_spawn.py``) against the plain ``subprocess.Popen`` path,
and the concurrent backend's drain ticks for executables.

Every case runs ``run_executable`` twice on real processes: once as it is (the lean path
where the options allow it) and once with the lean path switched off (Popen); the task
fields must agree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend, _spawn
from rhapsody_lab.backends._subprocess import ProcessTable, exec_options, run_executable

_FIELDS = ("stdout", "stderr", "exit_code")

CASES = {
    "output and exit code": dict(executable="/bin/sh", arguments=[
        "-c", "echo out; echo err >&2; exit 3"]),
    "on PATH, by name": dict(executable="echo", arguments=["a", 1, "b c"]),
    "shell": dict(executable="echo $((2 + 3)) | tr 5 6",
                  task_backend_specific_kwargs={"shell": True}),
    "env added": dict(executable="/bin/sh", arguments=["-c", "echo $RH_SPAWN_X"],
                      task_backend_specific_kwargs={"env": {"RH_SPAWN_X": "seen"}}),
    "stdin is /dev/null": dict(executable="/bin/cat"),
    "SIGPIPE at its default": dict(executable="/bin/sh", arguments=[
        "-c", "yes | head -n 2; echo ${PIPESTATUS:-done}"]),
    "killed by a signal": dict(executable="/bin/sh", arguments=["-c", "kill -9 $$"]),
    "a new session": dict(executable="/bin/sh", arguments=[
        "-c", "test \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ && echo leader"]),
    "missing executable": dict(executable="/no/such/program"),
    "not executable": dict(executable="/etc/passwd"),
    "missing on PATH": dict(executable="no-such-program-rh"),
    "big output": dict(executable="/bin/sh", arguments=[
        "-c", "head -c 300000 /dev/zero | tr '\\0' x; head -c 200000 /dev/zero >&2"]),
    "timeout": dict(executable="/bin/sleep", arguments=["5"],
                    task_backend_specific_kwargs={"timeout": 0.3}),
}


def _run(spec: dict, lean: bool, monkeypatch, capture: str | None = None) -> dict:
    with monkeypatch.context() as m:
        if not lean:
            m.setattr(_spawn, "usable", lambda cwd, env: False)
        task = ComputeTask(**spec)
        state = run_executable(task, exec_options(task), ProcessTable().register_for("x"),
                               capture)
    out = {f: task.get(f) for f in _FIELDS}
    if capture:  # the paths differ (two folders): compare their contents
        for field in ("stdout", "stderr"):
            with open(task[field]) as f:
                out[field] = f.read()
    exc = task.get("exception")
    why = None if exc is None else str(exc).replace(task.uid, "<uid>")
    return {"state": state, **out, "exception": why}


@pytest.mark.parametrize("name", list(CASES))
def test_the_lean_path_matches_popen(name, monkeypatch):
    assert _spawn.usable(None, None)  # Linux with pidfd_open: the lean path is taken
    lean, plain = _run(CASES[name], True, monkeypatch), _run(CASES[name], False, monkeypatch)
    assert lean == plain
    if name == "timeout":
        assert lean["state"] == "FAILED" and "timed out after 0.3s" in lean["stderr"]
    if name == "big output":
        assert len(lean["stdout"]) == 300_000 and len(lean["stderr"]) == 200_000
    if name == "SIGPIPE at its default":
        assert lean["stdout"].startswith("y\ny\n") and "Broken pipe" not in lean["stderr"]


def test_capture_stdio_files_match_popen(tmp_path, monkeypatch):
    spec = dict(executable="/bin/sh", arguments=["-c", "echo out; echo err >&2; exit 2"],
                capture_stdio=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lean = _run(spec, True, monkeypatch, str(tmp_path / "a"))
    plain = _run(spec, False, monkeypatch, str(tmp_path / "b"))
    assert lean == plain and lean["stdout"] == "out\n" and lean["exit_code"] == 2


def test_an_inheritable_descriptor_is_not_passed_on():
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        time.sleep(_spawn._INHERITED_TTL + 0.1)  # past the cached listing
        task = ComputeTask(executable="/bin/ls", arguments=["/proc/self/fd"])
        assert run_executable(task, exec_options(task)) == "DONE"
        fds = {int(x) for x in task.stdout.split()}
        assert w not in fds and {0, 1, 2} <= fds
    finally:
        os.close(r)
        os.close(w)


def test_a_cancel_ends_a_lean_child_and_its_group():
    table = ProcessTable()
    task = ComputeTask(executable="/bin/sh", arguments=["-c", "sleep 30 & sleep 30; wait"])
    pids = []

    def register(child):
        if child is not None:
            pids.append(child.pid)
        table.register_for(task.uid)(child)

    started = time.monotonic()
    threading.Timer(0.3, lambda: table.kill(task.uid)).start()
    run_executable(task, exec_options(task), register)
    assert time.monotonic() - started < 10 and task.exit_code == -signal.SIGTERM
    assert table.was_killed(task.uid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the whole group goes (its last zombie reaped)
        try:
            os.killpg(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process group {pids[0]} still alive")


async def test_drain_ticks_deliver_every_end_then_stop():
    backend = ConcurrentExecutionBackend(max_workers=2)
    async with Session([backend]) as session:
        for _round in range(3):  # bursts (ticks) and, between them, quiet spells
            tasks = [ComputeTask(executable="/bin/true") for _ in range(300)]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=60)
            assert [t.state for t in tasks] == ["DONE"] * 300
            await asyncio.sleep(0.05)
            assert backend._ticking is False  # no timer left running while idle
        lone = ComputeTask(executable="/bin/true")
        t0 = time.perf_counter()
        await session.submit_tasks([lone])
        await asyncio.wait_for(lone, 10)
        assert lone.state == "DONE" and time.perf_counter() - t0 < 1.0


async def test_while_ticking_an_end_wakes_the_loop_only_when_the_queue_is_empty():
    backend = ConcurrentExecutionBackend(max_workers=1)
    async with Session([backend]):
        backend._ticking = True  # as during a burst: ends wait for the next tick...
        backend._queue.put({"uid": "queued"})  # ...while more tasks wait to start
        backend._exec_ended()
        assert backend._wake_pending is False
        backend._queue.get()
        backend._exec_ended()  # the last of a batch, or one of a chain: drained at once
        assert backend._wake_pending is True
        await asyncio.sleep(0.05)
        assert backend._wake_pending is False  # the drain ran
        backend._ticking = False


async def test_a_chain_of_executables_is_not_held_back_by_the_tick():
    from rhapsody_lab.backends.concurrent import _EXEC_TICK

    backend = ConcurrentExecutionBackend(max_workers=2)
    async with Session([backend]) as session:
        waits = []
        for _ in range(40):  # each task submitted once the one before it is DONE
            task = ComputeTask(executable="/bin/true")
            t0 = time.perf_counter()
            await session.submit_tasks([task])
            await asyncio.wait_for(task, 10)
            waits.append(time.perf_counter() - t0)
        waits.sort()
        # held to the tick, half of them would wait most of one; here 1 ms (2-core machine)
        assert waits[len(waits) // 4] < _EXEC_TICK * 0.8, waits
