"""Allocation.detect(): parsing of Slurm variables, and real detection inside Slurm jobs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from rhapsody_lab.api.errors import ResourceError
from rhapsody_lab.resources import Allocation, expand_counts, expand_nodelist

_PRINT = ("from rhapsody_lab.resources import Allocation; import json; a = Allocation.detect(); "
          "print(json.dumps([a.source, a.job_id, list(a.nodes), list(a.cores_per_node), "
          "list(a.gpus_per_node)]))")


def _slurm_ready() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not installed (run .ci/setup.d/20-slurm.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm not answering: {exc}"
    if out.returncode != 0 or "up" not in out.stdout:
        return f"Slurm not answering: {out.stderr.strip() or out.stdout.strip()}"
    return None


slurm = pytest.mark.skipif(_slurm_ready() is not None, reason=str(_slurm_ready()))


@pytest.mark.parametrize("text,expected", [
    ("n01", ["n01"]),
    ("n[01-03]", ["n01", "n02", "n03"]),
    ("n[08-10,15]", ["n08", "n09", "n10", "n15"]),
    ("gpu[1-2]-ib,login1", ["gpu1-ib", "gpu2-ib", "login1"]),
    ("r[1-2]n[3-4]", ["r1n3", "r1n4", "r2n3", "r2n4"]),
    ("", []),
])
def test_expand_nodelist(text, expected):
    assert expand_nodelist(text) == expected


def test_expand_nodelist_refuses_garbage():
    with pytest.raises(ResourceError, match="n\\[3-1\\]"):
        expand_nodelist("n[3-1]")
    with pytest.raises(ResourceError, match="unbalanced"):
        expand_nodelist("n[1-2")


def test_expand_counts():
    assert expand_counts("36(x2),72") == [36, 36, 72]
    assert expand_counts("8") == [8]
    with pytest.raises(ResourceError, match="cores"):
        expand_counts("eight")


def test_detect_slurm_variables():
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n[01-03]",
           "SLURM_JOB_CPUS_PER_NODE": "8(x2),4", "SLURM_GPUS_PER_NODE": "a100:2"}
    a = Allocation.detect(env)
    assert (a.source, a.job_id, a.nodes) == ("slurm", "42", ("n01", "n02", "n03"))
    assert a.cores_per_node == (8, 8, 4) and a.cores == 20
    assert a.gpus_per_node == (2, 2, 2) and a.gpus == 6
    # only the per-node count of this node, and GPUs as a job total
    env = {"SLURM_JOB_ID": "7", "SLURM_NODELIST": "c[1-2]", "SLURM_CPUS_ON_NODE": "16",
           "SLURM_GPUS": "3"}
    a = Allocation.detect(env)
    assert a.cores_per_node == (16, 16) and a.gpus_per_node == (2, 1)


def test_detect_local_machine():
    a = Allocation.detect({})
    assert a.source == "local" and a.job_id is None
    assert a.nodes == (socket.gethostname(),)
    assert a.cores == len(os.sched_getaffinity(0))
    assert a.gpus == 0 or os.path.exists("/dev/nvidia0")
    assert Allocation.detect({"CUDA_VISIBLE_DEVICES": "0,1"}).gpus == 2
    assert "local" in str(a)


@slurm
def test_detect_inside_sbatch_job(tmp_path):
    out = tmp_path / "alloc.json"
    cmd = ["sbatch", "--wait", "-N1", "-n1", "-c2", "-t", "2", f"--output={out}",
           f"--chdir={tmp_path}", f"--wrap={sys.executable} -c \"{_PRINT}\""]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    assert res.returncode == 0, res.stderr + out.read_text() if out.exists() else res.stderr
    source, job_id, nodes, cores, gpus = json.loads(out.read_text().strip().splitlines()[-1])
    assert source == "slurm" and job_id == res.stdout.split()[-1]
    assert nodes == [socket.gethostname()]
    assert cores == [2] and gpus == [0]


@slurm
def test_detect_inside_srun_step():
    cmd = ["srun", "-N1", "-n1", "-c1", "-t", "2", sys.executable, "-c", _PRINT]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] = os.getcwd()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    assert res.returncode == 0, res.stderr
    source, job_id, nodes, cores, _gpus = json.loads(res.stdout.strip().splitlines()[-1])
    assert source == "slurm" and job_id.isdigit()
    assert nodes == [socket.gethostname()] and cores == [1]
