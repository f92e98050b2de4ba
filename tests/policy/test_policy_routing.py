"""Sessions built from a policy, on real runtimes: routing, limits, refusals, scale."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import ResourceError, SessionError, TaskValidationError
from rhapsody_lab.resources import Allocation

TWO = Allocation(("n0",), (2,), (0,), "local")
FAKE_SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "inference", "fake_openai_server.py")


def where() -> str:
    return threading.current_thread().name


def pid() -> int:
    return os.getpid()


def null() -> None:
    return None


def threads_policy(**extra) -> dict:
    """Two thread pools sharing the two cores: 'exe' (1 core) and 'fn' (1 core)."""
    return {"backends": {"exe": {"type": "concurrent", "cores": 1},
                         "fn": {"type": "concurrent", "cores": 1}},
            "routing": [{"kind": "executable", "backend": "exe"}],
            "default": "fn", **extra}


async def test_routes_by_kind_tag_request_and_name():
    policy = {
        "backends": {"small": {"type": "concurrent", "cores": 1},
                     "big": {"type": "concurrent", "cores": 0.5, "priority": 5},
                     "tagged": {"type": "concurrent", "cores": 0.5, "priority": 1}},
        "routing": [{"kind": "executable", "backend": "small"},
                    {"tags": ["ml", "train"], "backend": "tagged"},
                    {"kind": "function", "tags": "ml", "backend": "big"}],
        "default": "small",
    }
    with pytest.raises(SessionError, match="overlap"):  # 1 + 1 + 1 > 2 cores
        Session.from_policy(policy, TWO)
    four = Allocation(("n0",), (4,), (0,), "local")
    policy["backends"]["big"]["cores"] = 2
    policy["backends"]["tagged"]["cores"] = 1
    async with Session.from_policy(policy, four) as s:
        assert {n: b.capacity() for n, b in s.backends.items()} == \
            {"small": 1, "big": 2, "tagged": 1}
        tasks = {
            "exe": ComputeTask(executable="/bin/echo", arguments=["hi"]),
            "fn": ComputeTask(function=where),
            "train": ComputeTask(function=where, tags=["train"]),
            # two rules match: 'big' has the higher priority
            "ml": ComputeTask(function=where, tags="ml"),
            "ml_exe": ComputeTask(executable="/bin/true", tags=["ml"]),
            # a request only 'big' can hold
            "two_cores": ComputeTask(function=where, cores=2),
            "named": ComputeTask(function=where, backend="tagged"),
        }
        await s.submit_tasks(list(tasks.values()))
        await s.wait_tasks(list(tasks.values()), timeout=60)
        got = {k: t.backend for k, t in tasks.items()}
        assert got == {"exe": "small", "fn": "small", "train": "tagged", "ml": "big",
                       "ml_exe": "tagged", "two_cores": "big", "named": "tagged"}
        assert all(t.state == "DONE" for t in tasks.values())
        assert tasks["exe"].stdout == "hi\n"
        assert s._router.routed == {"small": 2, "big": 2, "tagged": 3}


async def test_oversized_requests_raise_resource_error_at_submit():
    async with Session.from_policy(threads_policy(), TWO) as s:
        fine = ComputeTask(function=null)
        cases = [
            (ComputeTask(function=null, cores=2), "cores", "needs 2 cores"),
            (ComputeTask(function=null, gpus=1), "gpus", "needs 1 GPUs"),
            (ComputeTask(executable="/bin/true", ranks=4), "cores", "needs 4 ranks"),
            (ComputeTask(function=null, task_backend_specific_kwargs={
                "process_templates": [(2, {}), (1, {})]}), "cores", "needs 3 ranks"),
            (ComputeTask(function=null, task_backend_specific_kwargs={
                "resources": {"GPU": 2}}), "gpus", "needs 2 GPUs"),
            (ComputeTask(function=null, cores=2, backend="exe"), "cores",
             "backend 'exe' (named by the task) has a share of 1"),
        ]
        for task, kind, words in cases:
            with pytest.raises(ResourceError) as info:
                # a refusal is immediate; the bound only turns a hang into a failure
                await asyncio.wait_for(s.submit_tasks([fine, task]), timeout=30)
            assert info.value.resource_type == kind and words in str(info.value)
            assert info.value.task_uid == task.uid
            assert fine.state == "NEW" and task.state == "NEW"  # nothing of the call sent
        with pytest.raises(TaskValidationError, match="no backend of the policy runs ai"):
            await s.submit_tasks([AITask(model="m", prompt="hi")])
        with pytest.raises(TaskValidationError, match="cores must be an integer"):
            await s.submit_tasks([ComputeTask(function=null, cores="many")])
        with pytest.raises(SessionError, match="Backend 'nope' requested by task"):
            await s.submit_tasks([ComputeTask(function=null, backend="nope")])
        await s.submit_tasks([fine])
        assert (await fine).state == "DONE" and s.get_statistics()["counts"]["DONE"] == 1


async def test_limit_caps_tasks_in_flight_without_blocking():
    policy = threads_policy()
    policy["backends"]["fn"].update(options={"max_workers": 6}, limit=2)
    running = []
    peak = [0]
    lock = threading.Lock()

    def work(i):
        with lock:
            running.append(i)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.02)
        with lock:
            running.remove(i)
        return i

    async with Session.from_policy(policy, TWO) as s:
        tasks = [ComputeTask(function=work, args=(i,)) for i in range(40)]
        futures = await s.submit_tasks(tasks)
        gate = s._router.gates["fn"]
        assert len(gate.inflight) <= 2 and len(gate.held) >= 30  # the rest wait here
        assert all(t.state in ("SUBMITTED", "QUEUED", "RUNNING", "DONE") for t in tasks)
        # the loop stays free while tasks wait behind the limit
        ticks = 0
        while not all(f.done() for f in futures):
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks > 10
        assert [t.return_value for t in tasks] == list(range(40))
        assert peak[0] <= 2
        # a held task can be canceled; close cancels what is still held
        slow = [ComputeTask(function=time.sleep, args=(0.3,)) for _ in range(6)]
        await s.submit_tasks(slow)
        assert await s.cancel_task(slow[-1]) is True
        assert slow[-1].state == "CANCELED"
    assert slow[-1].state == "CANCELED"
    assert all(t.state in ("DONE", "CANCELED") for t in slow)
    assert any(t.state == "CANCELED" for t in slow[2:-1])


@pytest.fixture(scope="module")
def dask_ok():
    pytest.importorskip("distributed", reason="the dask extra is not installed")


async def test_dask_localcluster_and_threads_share_the_machine(dask_ok, tmp_path):
    policy = tmp_path / "mixed.json"
    policy.write_text("""{
      "backends": {
        "exe": {"type": "concurrent", "cores": 1},
        "fn":  {"type": "dask", "cores": 1}
      },
      "routing": [{"kind": "executable", "backend": "exe"},
                  {"kind": "function", "backend": "fn"}]
    }""")
    async with Session.from_policy(policy, TWO) as s:
        assert s.backends["fn"].capacity() == 1 and s.backends["exe"].capacity() == 1
        fns = [ComputeTask(function=pid) for _ in range(20)]
        exes = [ComputeTask(executable="/bin/sh", arguments=["-c", "echo $$"])
                for _ in range(5)]
        await s.submit_tasks(fns + exes)
        await s.wait_tasks(fns + exes, timeout=120)
        assert {t.backend for t in fns} == {"fn"} and {t.backend for t in exes} == {"exe"}
        assert all(t.state == "DONE" for t in fns + exes)
        # functions ran in the Dask worker process, not in the driver
        assert {t.return_value for t in fns} - {os.getpid()} == {t.return_value for t in fns}


async def test_inference_service_beside_compute(tmp_path):
    pytest.importorskip("aiohttp", reason="the inference extra is not installed")
    policy = {
        "backends": {
            "cpu": {"type": "concurrent"},
            "llm": {"type": "vllm", "options": {
                "server_command": [sys.executable, FAKE_SERVER, "--port", "{port}"],
                "port": 0, "startup_timeout": 60, "max_batch_wait_ms": 5}},
        },
        "routing": [{"kind": "ai", "backend": "llm"}],
    }
    async with Session.from_policy(policy, TWO) as s:
        assert s.backends["cpu"].capacity() == 2  # the inference server takes no cores
        ai = [AITask(model="fake-model", prompt="what is 2+2?") for _ in range(5)]
        fn = [ComputeTask(function=null) for _ in range(5)]
        await s.submit_tasks(ai + fn)
        await s.wait_tasks(ai + fn, timeout=60)
        assert [t.response for t in ai] == ["4"] * 5
        assert {t.backend for t in ai} == {"llm"} and {t.backend for t in fn} == {"cpu"}


async def test_three_backends_run_20000_mixed_null_tasks(dask_ok):
    policy = {
        "backends": {"threads": {"type": "concurrent", "cores": 1, "priority": 1},
                     "dask": {"type": "dask", "cores": 1},
                     "exe": {"type": "concurrent", "cores": 0.5,
                             "options": {"max_workers": 4}, "limit": 64}},
        "routing": [{"kind": "executable", "backend": "exe"},
                    {"tags": "dask", "backend": "dask"}],
        "default": "threads",
    }
    alloc = Allocation(("n0",), (3,), (0,), "local")  # three shares; the machine has 2
    async with Session.from_policy(policy, alloc) as s:
        tasks = []
        for i in range(20_000):
            if i % 100 == 0:
                tasks.append(ComputeTask(executable="/bin/true"))
            elif i % 4 == 0:
                tasks.append(ComputeTask(function=null, tags="dask"))
            else:
                tasks.append(ComputeTask(function=null))
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks, timeout=200)
        assert sum(t.state == "DONE" for t in tasks) == 20_000
        assert s.get_statistics()["counts"]["DONE"] == 20_000
        assert s._router.routed == {"threads": 15_000, "dask": 4_800, "exe": 200}
        by = {}
        for t in tasks:
            by[t.backend] = by.get(t.backend, 0) + 1
        assert by == s._router.routed


@functools.cache
def _slurm_skip() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm is not installed (run .ci/setup.d/20-slurm.sh)"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm not answering: {exc}"
    if "up" not in out.stdout:
        return f"Slurm not answering: {out.stderr.strip()}"
    return None


def slurm_job() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


@pytest.mark.skipif(_slurm_skip() is not None, reason=str(_slurm_skip()))
async def test_dask_on_slurm_inside_its_share(tmp_path):
    policy = {
        "backends": {"batch": {"type": "dask-slurm", "cores": 1, "options": {
                         "log_directory": str(tmp_path), "walltime": "00:10:00"}},
                     "local": {"type": "concurrent", "cores": 1}},
        "routing": [{"tags": "batch", "backend": "batch"}],
        "default": "local",
    }
    async with Session.from_policy(policy, TWO) as s:
        remote = [ComputeTask(function=slurm_job, tags="batch") for _ in range(4)]
        here = [ComputeTask(function=slurm_job) for _ in range(2)]
        await s.submit_tasks(remote + here)
        await s.wait_tasks(remote + here, timeout=150)
        assert all(t.state == "DONE" for t in remote + here)
        jobs = {t.return_value for t in remote}
        assert len(jobs) == 1 and jobs.pop().isdigit()  # one Slurm job of 1 core
        assert {t.backend for t in remote} == {"batch"}
        assert all(t.backend == "local" for t in here)


# -- Dragon (slow: one runtime launch for every check) -----------------------------------------
DRAGON_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                             "dragon_policy.py")


def _dragon() -> str | None:
    import importlib.util
    bindir = os.path.dirname(sys.executable)
    exe = shutil.which("dragon", path=bindir + os.pathsep + os.environ.get("PATH", ""))
    return exe if importlib.util.find_spec("dragon") is not None else None


@pytest.mark.skipif(_dragon() is None, reason="dragonhpc is not installed "
                    "(pip install 'rhapsody-lab[dragon]')")
def test_dragon_beside_a_thread_pool(tmp_path):
    import json
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    env["DRAGON_DEFAULT_SEG_SZ"] = str(512 * 1024 * 1024)
    env["DRAGON_INF_SEG_SZ"] = str(256 * 1024 * 1024)
    with subprocess.Popen([_dragon(), "-s", DRAGON_SCRIPT], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:  # (no new session: the Dragon launcher kills itself in one)
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
    checks = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            checks[d["check"]] = d
    assert "closed" in checks, f"rc {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert checks["started"]["capacity"] == {"dragon": 1, "exe": 1}
    m = checks["mixed"]
    assert m["fn_states"] == ["DONE"] and m["exe_states"] == ["DONE"]
    assert m["fn_backends"] == ["dragon"] and m["exe_backends"] == ["exe"]
    assert m["values"] == [i * i for i in range(50)]
    assert m["outs"] == [f"{i}\n" for i in range(10)]
    o = checks["oversized"]
    assert o["raised"] == "ResourceError" and "needs 2 ranks" in o["message"]
    assert "backend 'dragon' (named by the task) has a share of 1" in o["message"]
    assert o["state"] == "NEW"
