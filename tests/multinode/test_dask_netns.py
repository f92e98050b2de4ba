"""DaskExecutionBackend across "nodes": a scheduler and two workers in three network namespaces.

Each namespace has its own network stack (veth into one bridge, 10.77.x.0/24, the project's
test addresses); the test's client in the root namespace reaches the scheduler over the
bridge. Killing every process of one namespace is a node dying: Dask reruns only the tasks
that node held; every task ends, none is lost, and the session stays usable.
Needs root and ``ip netns``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pytest.importorskip("distributed")

from netns import Net, list_netns, skip_reason

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import DaskExecutionBackend

TERMINAL = {"DONE", "FAILED", "CANCELED"}


# -- task functions (module level: the workers import this module by name) -------------
def where(log: str, i: int, seconds: float) -> str:
    """Log that task ``i`` started here, nap, and return this worker's host address."""
    from distributed import get_worker
    host = get_worker().address.split("://", 1)[1].rsplit(":", 1)[0]
    with open(log, "a") as f:
        f.write(f"{i} {host}\n")
    time.sleep(seconds)
    return host


@pytest.fixture
def cluster(tmp_path):
    """A scheduler in namespace S, one 2-thread worker in each of A and B: (net, address)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 10000:04d}"
    net = Net(tag, 20 + os.getpid() % 200)
    try:
        net.up(["S", "A", "B"])
        py, sched = sys.executable, net.addresses["S"]
        sfile = tmp_path / "scheduler.json"
        net.run("S", [py, "-m", "distributed.cli.dask_scheduler", "--host", sched,
                      "--port", "8786", "--no-dashboard", "--scheduler-file", str(sfile)],
                str(tmp_path / "S.log"))
        address = f"tcp://{sched}:8786"
        for role in ("A", "B"):
            net.run(role, [py, "-m", "distributed.cli.dask_worker", address, "--host",
                           net.addresses[role], "--nthreads", "2", "--no-nanny",
                           "--no-dashboard", "--name", role, "--death-timeout", "60"],
                    str(tmp_path / f"{role}.log"))
        _wait_for_workers(sfile, address, 2, tmp_path)
        yield net, address
    finally:
        net.down()
        left = [ns for ns in net.namespaces.values() if ns in list_netns()]
        assert not left, f"namespaces left behind: {left}"


def _wait_for_workers(sfile, address: str, n: int, logs) -> None:
    from distributed import Client
    deadline = time.monotonic() + 40
    while not sfile.exists():
        if time.monotonic() > deadline:
            pytest.fail("scheduler did not start: " + (logs / "S.log").read_text()[-2000:])
        time.sleep(0.1)
    assert json.loads(sfile.read_text())["address"] == address
    with Client(address, timeout=20) as c:  # over the bridge, from the root namespace
        try:
            c.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            pytest.fail("workers did not join: " + "\n".join(
                (logs / f"{r}.log").read_text()[-1500:] for r in "AB"))


def _runs(log) -> dict[int, list[str]]:
    runs: dict[int, list[str]] = {}
    for line in log.read_text().split("\n"):
        if line:
            i, host = line.split()
            runs.setdefault(int(i), []).append(host)
    return runs


async def test_tasks_spread_over_two_namespaces_and_survive_one_dying(cluster, tmp_path):
    import asyncio
    net, address = cluster
    a, b = net.addresses["A"], net.addresses["B"]
    log = tmp_path / "runs.log"
    backend = DaskExecutionBackend(client=address)
    async with Session(backends=[backend]) as session:
        assert backend.capacity() == 4  # 2 workers x 2 threads, seen over the network
        spread = [ComputeTask(function=where, args=(str(log), i, 0.3)) for i in range(8)]
        await session.submit_tasks(spread)
        await session.wait_tasks(spread, timeout=30)
        assert [t.state for t in spread] == ["DONE"] * 8
        assert {t.return_value for t in spread} == {a, b}  # both "nodes" ran tasks
        log.write_text("")

        # 12 tasks of 2 s on 4 threads: node A dies while it holds some of them
        doomed = [ComputeTask(function=where, args=(str(log), i, 2.0)) for i in range(12)]
        await session.submit_tasks(doomed)
        deadline = time.monotonic() + 20
        while {h for hs in _runs(log).values() for h in hs} != {a, b}:
            assert time.monotonic() < deadline, f"not running on both: {_runs(log)}"
            await asyncio.sleep(0.05)
        killed = net.kill("A")
        assert killed, "no process in namespace A"
        before = _runs(log)
        await session.wait_tasks(doomed, timeout=60)

        states = [t.state for t in doomed]
        assert set(states) <= TERMINAL and len(states) == 12  # none lost
        for t in doomed:
            if t.state == "FAILED":  # allowed only with a reason from Dask
                assert t.exception is not None and str(t.exception), t
        done = [t for t in doomed if t.state == "DONE"]
        assert all(t.return_value == b for t in done)  # A is gone: B finished everything
        runs = _runs(log)
        assert set(runs) == set(range(12))
        # tasks first started on B ran once; only A's tasks were run again
        for i, hosts in runs.items():
            if hosts[0] == b:
                assert hosts == [b], (i, hosts)
            else:
                assert hosts[0] == a and set(hosts[1:]) <= {b}, (i, hosts)
        rerun = [i for i, hosts in runs.items() if len(hosts) > 1]
        assert rerun and all(before[i][0] == a for i in rerun)
        assert len(done) + states.count("FAILED") == 12

        # the session (and the backend) go on with the node that is left
        more = [ComputeTask(function=where, args=(str(log), 100 + i, 0.05)) for i in range(4)]
        await session.submit_tasks(more)
        await session.wait_tasks(more, timeout=30)
        assert [t.state for t in more] == ["DONE"] * 4
        assert {t.return_value for t in more} == {b}
        assert await backend.state() == "RUNNING"
