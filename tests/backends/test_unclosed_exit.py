"""A session the user never closed does not keep the interpreter (a notebook kernel) from
exiting, nor leave its executables' children behind: every kind of concurrent backend, and
Dask (a LocalCluster the backend started).

Each case runs a real interpreter that starts a backend, leaves a ``sleep 60`` executable
running and more tasks queued, and returns from ``asyncio.run`` without closing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = """
import asyncio, os, sys, time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend, DaskExecutionBackend

def square(x):
    return x * x

async def main(kind, pidfile):
    if kind == "dask":
        backend = DaskExecutionBackend({{"n_workers": 1, "threads_per_worker": 2}})
    else:
        backend = ConcurrentExecutionBackend({{"threads": ThreadPoolExecutor(2),
            "processes": ProcessPoolExecutor(2), "own": None}}[kind])
    session = Session([await backend])
    first = ComputeTask(function=square, args=(3,))
    await session.submit_tasks([first])
    await first
    assert first.return_value == 9, first
    sleeper = ComputeTask(executable="/bin/sh",
                          arguments=["-c", f"echo $$ > {{pidfile}}.tmp; "
                                           f"mv {{pidfile}}.tmp {{pidfile}}; exec sleep 60"])
    await session.submit_tasks([sleeper, *[ComputeTask(executable="/bin/true")
                                            for _ in range(20)]])
    while not os.path.exists(pidfile):
        await asyncio.sleep(0.02)
    print("leaving without close", flush=True)

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init is gone for us
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("kind", ["threads", "processes", "own", "dask"])
def test_an_unclosed_session_exits_and_leaves_no_child(kind, tmp_path):
    if kind == "dask":
        pytest.importorskip("distributed", reason="the dask extra is not installed")
    script = tmp_path / "leave.py"
    script.write_text(textwrap.dedent(SCRIPT.format()))
    pidfile = tmp_path / "sleep.pid"
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(script), kind, str(pidfile)],
                         capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert "leaving without close" in out.stdout
    assert took < 30, f"the interpreter took {took:.0f} s to exit"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"the task's child {pid} outlived the interpreter"
