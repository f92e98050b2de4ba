"""DaskNodesBackend on this machine: workers launched through a {host} template, a worker
that never joins, a launcher that does not exist, and nothing left behind."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("distributed")

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import BackendError, SessionError
from rhapsody_lab.backends.dask_nodes import DaskNodesBackend, WorkerSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def checkout_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the launched workers import this checkout


async def test_one_worker_per_node_through_a_template(no_children):
    # two "nodes" on this host: the template marks each worker's environment with its node
    backend = DaskNodesBackend([WorkerSpec("node-a", 2), {"host": "node-b", "nthreads": 1,
                                                          "resources": {"GPU": 1}}],
                               launcher="env RL_NODE={host} RL_CORES={cores}",
                               scheduler_host="127.0.0.1", name="nodes")
    async with Session([backend]) as s:
        assert backend.capacity() == 3 and backend.hosts == ("node-a", "node-b")
        tasks = [ComputeTask(executable="sh", arguments=["-c", "echo $RL_NODE $RL_CORES"])
                 for _ in range(6)]
        gpu = ComputeTask(executable="sh", arguments=["-c", "echo $RL_NODE"],
                          task_backend_specific_kwargs={"resources": {"GPU": 1}})
        await s.submit_tasks([*tasks, gpu])
        await s.wait_tasks([*tasks, gpu], timeout=60)
        assert [t.state for t in tasks] == ["DONE"] * 6
        assert {t.stdout.strip() for t in tasks} <= {"node-a 2", "node-b 1"}
        assert gpu.state == "DONE" and gpu.stdout.strip() == "node-b"  # only b has a GPU
    assert backend._procs == []


async def test_a_worker_that_never_joins_fails_the_start_naming_its_node(no_children):
    backend = DaskNodesBackend([WorkerSpec("ghost", 1)], launcher="env RL={host} false",
                               scheduler_host="127.0.0.1", wait_for_workers=3)
    with pytest.raises(BackendError) as info:
        await backend
    msg = str(info.value)
    assert "did not all join within 3 s" in msg and "ghost (exit 1)" in msg
    assert await backend.state() == "FAILED" and backend._procs == []
    await backend.shutdown()


async def test_a_missing_launcher_is_named(no_children):
    backend = DaskNodesBackend([WorkerSpec("n1", 1)], launcher="no-such-launcher-rl {host}",
                               scheduler_host="127.0.0.1")
    with pytest.raises(BackendError, match="cannot launch the worker of n1 with "
                                           "'no-such-launcher-rl'"):
        await backend
    await backend.shutdown()


@pytest.mark.parametrize("kwargs, words", [
    ({"workers": []}, "workers must be a non-empty list"),
    ({"workers": [{"host": "n1"}]}, "workers[0] must have host, nthreads"),
    ({"workers": [WorkerSpec("n1", 0)]}, "workers[0].nthreads must be an integer >= 1"),
    ({"workers": [WorkerSpec("n1", 1)], "launcher": "pdsh"}, "launcher must be one of"),
    ({"workers": [WorkerSpec("n1", 1)], "wait_for_workers": -1}, "wait_for_workers must be"),
])
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises(SessionError) as info:
        DaskNodesBackend(**kwargs)
    assert words in str(info.value)


def test_auto_launcher_is_srun_inside_a_slurm_job_else_ssh(monkeypatch):
    b = DaskNodesBackend([WorkerSpec("n1", 4)])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert b.resolved_launcher() == "ssh"
    assert b.worker_command(b.workers[0], "tcp://h:1")[:4] == ["ssh", "-o", "BatchMode=yes",
                                                               "n1"]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no srun on this PATH
    assert b.resolved_launcher() == "ssh"
