"""Policy shares over a multi-node Slurm allocation: node placement, core counts, errors,
and a Dask share whose workers are bound to its nodes.

The allocation is read by ``Allocation.detect`` from Slurm's variables; the placement is
checked on what the policy hands the backend (its worker list and launch commands). The
last test runs such a share for real, its "nodes" being network namespaces.
"""

from __future__ import annotations

import os
import sys

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends.dask import DaskExecutionBackend
from rhapsody_lab.backends.dask_nodes import DaskNodesBackend, WorkerSpec
from rhapsody_lab.policy import PolicyError, build_backends, load_policy, node_workers
from rhapsody_lab.resources import Allocation

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n[01-04]",
         "SLURM_CPUS_ON_NODE": "8", "SLURM_JOB_CPUS_PER_NODE": "8(x4)",
         "SLURM_GPUS_ON_NODE": "2"}
NODES = ("n01", "n02", "n03", "n04")


@pytest.fixture
def alloc() -> Allocation:
    return Allocation.detect(SLURM)


def two_shares(**extra) -> dict:
    return {"backends": {
        "sim": {"type": "dask", "nodes": 2, "options": {"launcher": "srun"}},
        "ml": {"type": "dask", "nodes": ["n03", "n04"], "cores": 12, "gpus": 3,
               "options": {"launcher": "ssh"}},
        **extra}}


def test_slurm_allocation_of_four_nodes(alloc):
    assert (alloc.source, alloc.job_id, alloc.nodes) == ("slurm", "4242", NODES)
    assert alloc.cores_per_node == (8,) * 4 and alloc.cores == 32
    assert alloc.gpus_per_node == (2,) * 4 and alloc.gpus == 8
    # uneven nodes: Slurm's per-node counts win over SLURM_CPUS_ON_NODE
    uneven = Allocation.detect({**SLURM, "SLURM_JOB_CPUS_PER_NODE": "8(x2),16(x2)"})
    assert uneven.cores_per_node == (8, 8, 16, 16)


def test_two_shares_own_disjoint_nodes_with_their_cores(alloc):
    p = load_policy(two_shares(), alloc)
    sim, ml = p.backends["sim"], p.backends["ml"]
    assert sim.nodes == ("n01", "n02") and ml.nodes == ("n03", "n04")
    assert set(sim.nodes).isdisjoint(ml.nodes)
    assert (sim.cores, sim.gpus) == (16, 4)   # whole nodes: all their cores and GPUs
    assert (ml.cores, ml.gpus) == (12, 3)     # part of its own nodes
    # a node-less share takes cores from the nodes nobody owns
    p = load_policy({"backends": {"a": {"type": "dask", "nodes": 3},
                                  "b": {"type": "concurrent", "cores": 8}}}, alloc)
    assert p.backends["a"].nodes == NODES[:3] and p.backends["b"].cores == 8


@pytest.mark.parametrize("extra_share, key, words", [
    ({"nodes": 5}, "backends.sim.nodes", "5 exceeds the allocation's 4 nodes"),
    ({"nodes": 2, "cores": 17}, "backends.sim.cores", "17 exceeds the allocation's 16 cores "
     "of its nodes"),
    ({"nodes": 2, "gpus": 5}, "backends.sim.gpus", "5 exceeds the allocation's 4 GPUs"),
    ({"nodes": ["n01", "n09"]}, "backends.sim.nodes[1]", "'n09' is not a node"),
])
def test_a_share_asking_more_than_there_is_names_share_and_field(alloc, extra_share, key,
                                                                   words):
    policy = two_shares()
    policy["backends"]["sim"] = {"type": "dask", **extra_share}
    with pytest.raises(PolicyError) as info:
        load_policy(policy, alloc)
    assert info.value.key == key and words in str(info.value)


def test_shares_that_overlap_name_the_second_share(alloc):
    policy = two_shares()
    policy["backends"]["sim"]["nodes"] = ["n02", "n03"]
    with pytest.raises(PolicyError) as info:
        load_policy(policy, alloc)
    assert info.value.key == "backends.ml.nodes"
    assert "node 'n03' overlaps backend 'sim'" in str(info.value)
    policy = two_shares(extra={"type": "dask", "nodes": 1})  # only n03/n04 left... taken
    with pytest.raises(PolicyError) as info:
        load_policy(policy, alloc)
    assert info.value.key == "backends.extra.nodes" and "overlap" in str(info.value)


def test_a_dask_share_gets_one_worker_per_node_it_owns(alloc):
    p = load_policy(two_shares(), alloc)
    sim, ml = build_backends(p)  # constructed, nothing started
    assert isinstance(sim, DaskNodesBackend) and isinstance(ml, DaskNodesBackend)
    assert sim.workers == (WorkerSpec("n01", 8, {"GPU": 2}), WorkerSpec("n02", 8, {"GPU": 2}))
    assert ml.workers == (WorkerSpec("n03", 6, {"GPU": 2}), WorkerSpec("n04", 6, {"GPU": 1}))
    assert (sim.hosts, ml.hosts) == (("n01", "n02"), ("n03", "n04"))
    assert (sim.capacity(), ml.capacity()) == (16, 12)
    assert node_workers(p.backends["ml"], alloc) == list(ml.workers)

    # srun: one job step pinned to each node, threads = the node's share of cores
    cmd = sim.worker_command(sim.workers[0], "tcp://10.77.0.1:8786")
    assert cmd[:6] == ["srun", "--nodes=1", "--ntasks=1", "--nodelist=n01",
                       "--cpus-per-task=8", "--overlap"]
    worker = cmd[6:]
    assert worker[:4] == [sys.executable, "-m", "distributed.cli.dask_worker",
                          "tcp://10.77.0.1:8786"]
    assert worker[worker.index("--name") + 1] == "n01"
    assert worker[worker.index("--nthreads") + 1] == "8"
    assert worker[worker.index("--resources") + 1] == "GPU=2"
    # ssh: the same worker command, quoted, on the node
    cmd = ml.worker_command(ml.workers[1], "tcp://10.77.0.1:8786")
    assert cmd[:4] == ["ssh", "-o", "BatchMode=yes", "n04"]
    assert "--nthreads 6" in cmd[4] and "--name n04" in cmd[4] and "GPU=1" in cmd[4]


def test_dask_shares_without_nodes_of_their_own_stay_local(alloc):
    p = load_policy({"backends": {"fn": {"type": "dask", "cores": 2}}}, alloc)
    (fn,) = build_backends(p)
    assert type(fn) is DaskExecutionBackend and fn._cluster_kwargs["n_workers"] == 2
    one = Allocation(("here",), (2,), (0,), "local")  # the local machine: a LocalCluster
    (fn,) = build_backends(load_policy({"backends": {"fn": {"type": "dask", "nodes": 1}}},
                                       one))
    assert type(fn) is DaskExecutionBackend


def test_bad_node_options_are_named(alloc):
    policy = two_shares()
    policy["backends"]["sim"]["options"] = {"launcher": "rsh"}
    with pytest.raises(PolicyError) as info:
        build_backends(load_policy(policy, alloc))
    assert info.value.key == "backends.sim.options" and "launcher must be one of" in str(
        info.value)
    policy["backends"]["sim"]["options"] = {"resources": {"n_workers": 2}}
    with pytest.raises(PolicyError) as info:
        build_backends(load_policy(policy, alloc))
    assert info.value.key == "backends.sim.options" and "resources" in str(info.value)


# -- for real: the share's nodes are network namespaces --------------------------------
@pytest.fixture
def two_nodes():
    pytest.importorskip("distributed")
    from netns import Net, skip_reason
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{(os.getpid() + 1) % 10000:04d}"
    net = Net(tag, 20 + (os.getpid() + 101) % 200)
    try:
        net.up(["A", "B"])
        yield net
    finally:
        net.down()


async def test_a_dask_share_runs_its_tasks_on_its_nodes_only(two_nodes, monkeypatch):
    from netns import ROOT
    net = two_nodes
    a, b = net.namespaces["A"], net.namespaces["B"]
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the workers import this checkout
    alloc = Allocation((a, b, "login"), (2, 1, 1), (0, 0, 0), "slurm", "1")
    policy = {"backends": {
        "nodes": {"type": "dask", "nodes": [a, b], "options": {
            "launcher": "ip netns exec {host}", "scheduler_host": f"{net.prefix}.1"}},
        "here": {"type": "concurrent", "cores": 1}},
        "routing": [{"kind": "executable", "backend": "nodes"}], "default": "here"}
    async with Session.from_policy(policy, alloc) as s:
        backend = s.backends["nodes"]
        assert backend.capacity() == 3  # 2 + 1 threads, both workers joined
        tasks = [ComputeTask(executable="sh", arguments=["-c", "ip netns identify; sleep 0.3"])
                 for _ in range(9)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks, timeout=60)
        assert [t.state for t in tasks] == ["DONE"] * 9, [t.stderr for t in tasks]
        assert {t.stdout.strip() for t in tasks} == {a, b}  # on its nodes, both of them
        assert {t.backend for t in tasks} == {"nodes"}
    assert backend._procs == []  # every launched worker ended with the session


# -- for real: inside a Slurm job, the share's worker is a job step on its node -------------
SRUN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                           "dask_nodes_srun.py")


def _slurm_skip() -> str | None:
    import shutil
    import subprocess
    if shutil.which("salloc") is None or shutil.which("srun") is None:
        return "Slurm is not installed (run .ci/setup.d/20-slurm.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm not answering: {exc}"
    return None if "up" in out.stdout else f"Slurm not answering: {out.stderr.strip()}"


def test_a_dask_share_in_a_slurm_job_runs_on_srun_steps():
    import json
    import subprocess
    reason = _slurm_skip()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("distributed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]  # a job of its own, even when pytest runs inside one
    out = subprocess.run(["salloc", "-N1", "-n1", "-c2", "--time=5", sys.executable,
                          SRUN_SCRIPT], capture_output=True, text=True, env=env, timeout=150)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    assert lines, f"rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    r = json.loads(lines[-1])
    assert (r["source"], r["backend"], r["launcher"]) == ("slurm", "DaskNodesBackend", "srun")
    node = r["nodes"][0]
    assert r["command"][:4] == ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={node}"]
    assert r["capacity"] == r["cores"] == 2
    assert r["states"] == ["DONE"] * 6
    job, step, where = r["seen"][0].split()
    assert len(r["seen"]) == 1 and job == r["job"] and step.isdigit() and where == node
    assert r["left"] == 0  # the worker's step ended with the session
