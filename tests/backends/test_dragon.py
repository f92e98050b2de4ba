"""DragonExecutionBackend (alias DragonExecutionBackendV3) on a real Dragon runtime.

Each Dragon launch costs seconds, so one script (``dragon_scripts/modes.py``) runs every
mode and check under ``dragon -s`` and prints one JSON line per check; the tests below
assert on those lines. The runtime's processes and /dev/shm segments are checked after it
exits. Skipped only where dragonhpc is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "dragon_scripts")
BIN = os.path.dirname(sys.executable)
DRAGON = shutil.which("dragon", path=BIN + os.pathsep + os.environ.get("PATH", ""))

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dragon") is None or DRAGON is None,
    reason="dragonhpc is not installed (pip install 'rhapsody-lab[dragon]')")


def _env(token: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["DRAGON_DEFAULT_SEG_SZ"] = str(512 * 1024 * 1024)
    env["DRAGON_INF_SEG_SZ"] = str(256 * 1024 * 1024)
    env["RHAPSODY_DRAGON_TEST_TOKEN"] = token
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(HERE))  # the repository
    return env


def _shm() -> set[str]:
    """/dev/shm entries, without Python multiprocessing's own (other tests make those)."""
    return {n for n in os.listdir("/dev/shm") if not n.startswith(("sem.", "psm_", "wnsm_"))}


def _procs_with(token: str) -> list[str]:
    found = []
    needle = f"RHAPSODY_DRAGON_TEST_TOKEN={token}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read():
                    with open(f"/proc/{pid}/cmdline", "rb") as f2:
                        found.append(f"{pid}:{f2.read()[:120]!r}")
        except OSError:
            continue
    return found


def run_dragon(script: str, *args: str, tmp: str, timeout: float = 180,
               launcher: list | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``script`` under ``dragon -s``; return its JSON lines by check, and the run."""
    token = uuid.uuid4().hex
    shm_before = _shm()
    cmd = (launcher if launcher is not None else [DRAGON, "-s"]) + \
        [os.path.join(SCRIPTS, script), *args]
    with subprocess.Popen(cmd, cwd=tmp, env=_env(token), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
    proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    # Dragon names a runtime's pools after its launcher's pid (DD0275def0D for pid 4275):
    # only those can be ours (another engineer's runtime may be up at the same time)
    mine = (f"DD{p.pid % 1000:04d}", str(p.pid))
    checks = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            checks[d["check"]] = d
    deadline = time.time() + 10
    while True:
        left = _procs_with(token)
        new_shm = {n for n in _shm() - shm_before
                   if n.startswith(mine[0]) or (n.startswith("DD") and mine[1] in n)}
        if (not left and not new_shm) or time.time() > deadline:
            break
        time.sleep(0.3)
    checks["_after"] = {"processes": left, "shm": sorted(new_shm)}
    return checks, proc


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dragon"))
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    checks, proc = run_dragon("modes.py", out, tmp=tmp)
    if "leftover_pids" not in checks:
        pytest.fail(f"modes.py did not finish (rc {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    checks["_out"] = out
    return checks


def test_started_and_submit_returns_before_execution(modes):
    assert modes["started"]["capacity"] == 2
    # 16 tasks including 30 s sleeps: submit must return long before any of them ends
    assert modes["submit_returned"]["seconds"] < 5.0


def test_function_native(modes):
    t = modes["native"]
    assert (t["state"], t["return_value"], t["stdout"], t["exit_code"]) == ("DONE", 49, "49", 0)
    a = modes["native_async"]
    assert a["state"] == "DONE" and a["return_value"].startswith("[native] ")


def test_function_process_with_env_and_cwd(modes):
    t = modes["fn_process"]
    assert t["state"] == "DONE", t
    rv = t["return_value"]
    assert rv["scale"] == 3 and rv["n"] == 1 and rv["rank"] == 0
    assert rv["cwd"] == modes["_out"] and rv["env"] == "hello"
    assert t["stdout"] == str(rv)


def test_function_job_groups_keep_their_templates(modes):
    t = modes["fn_job"]
    assert t["state"] == "DONE", t
    rv = t["return_value"]
    assert [r["rank"] for r in rv] == [0, 1, 2] and {r["n"] for r in rv} == {3}
    assert len({r["pid"] for r in rv}) == 3
    assert [r["env"] for r in rv] == ["hello", "hello", "other"]
    assert rv[0]["cwd"] == modes["_out"] and rv[2]["cwd"] != modes["_out"]


def test_executable_process_and_default(modes):
    t = modes["exe_process"]
    assert t["state"] == "DONE" and t["exit_code"] == 0
    assert t["stdout"] == f"cwd={modes['_out']} var=hello\n" and t["stderr"] == "to-err\n"
    d = modes["exe_default"]
    assert d["state"] == "DONE" and d["stdout"].strip()
    c = modes["exe_capture"]  # capture_stdio: the output in <work_dir>/<uid>.stdout/.stderr
    assert c["state"] == "DONE", c
    assert c["stdout"].endswith(f"{c['uid']}.stdout") and c["stderr"].endswith(".stderr")
    with open(c["stdout"]) as out, open(c["stderr"]) as err:
        assert (out.read(), err.read()) == ("cap-out\n", "cap-err\n")


def test_executable_job_and_mpi_ranks(modes):
    t = modes["exe_job"]
    assert t["state"] == "DONE"
    assert t["stdout"].splitlines() == [f"rank={i} of 4" for i in range(4)]
    m = modes["mpi_ranks"]
    assert m["state"] == "DONE", m
    if modes["started"]["have_mpi"]:  # a real MPI program: mpi4py allreduce over 3 ranks
        assert sorted(m["stdout"].splitlines()) == [f"rank={i} size=3 sum=3" for i in range(3)]
    else:  # no MPI installed: type="mpi" + ranks still starts that many ranks
        assert m["stdout"].splitlines() == [f"rank={i}" for i in range(3)]


def test_failures_reach_only_their_task(modes):
    t = modes["native_raises"]
    assert t["state"] == "FAILED" and t["exit_code"] == 1
    assert t["exception"].startswith("KeyError") and "bad-key" in t["stderr"]
    assert "Traceback" in t["stderr"] and "boom" in t["stderr"]
    j = modes["job_rank_fails"]
    assert j["state"] == "FAILED" and j["exception"].startswith("ValueError")
    assert "[rank 1]" in j["stderr"] and "rank one exploded" in j["stderr"]
    assert "[rank 0]" not in j["stderr"]
    c = modes["process_crash"]
    assert c["state"] == "FAILED" and c["exit_code"] == 7
    e = modes["exe_fails"]
    assert e["state"] == "FAILED" and e["exit_code"] == 3 and "oops" in e["stderr"]
    assert e["stdout"] == "partial\npartial\n"
    m = modes["exe_missing"]
    assert m["state"] == "FAILED" and m["exit_code"] == 127 and "/no/such/binary" in m["stderr"]
    after = modes["after_failures"]
    assert after["ok"] and after["states"] == ["DONE"]


def test_timeouts_end_the_processes(modes):
    for name in ("exe_timeout", "fn_timeout"):
        t = modes[name]
        assert t["state"] == "FAILED", t
        assert "timed out" in t["stderr"] and "timed out" in t["exception"]


def test_bad_templates_raise_before_submission(modes):
    for name in ("bad_host", "bad_cpu", "bad_gpu"):
        assert modes[name]["raised"] == "ResourceError", modes[name]
        assert modes[name]["state"] == "NEW"
    assert "nohost" in modes["bad_host"]["message"]
    assert "999" in modes["bad_cpu"]["message"]
    for name in ("bad_key", "bad_n"):
        assert modes[name]["raised"] == "TaskValidationError", modes[name]


def test_a_task_shows_running_on_its_state_while_it_runs(modes):
    assert modes["running_state"] == {"check": "running_state", "native": "RUNNING",
                                      "native_end": "DONE", "process": "RUNNING",
                                      "process_end": "DONE"}


def test_cancel_and_close_leave_nothing_behind(modes):
    assert modes["cancel_running"] == {"check": "cancel_running", "returned": True,
                                       "state": "CANCELED"}
    assert modes["close"]["states"] == ["CANCELED", "CANCELED"]
    left = modes["leftover_pids"]
    assert left["pids"] >= 4 and left["alive"] == [] and left["sleeps"] == []
    assert modes["_after"] == {"processes": [], "shm": []}


def test_not_under_dragon_is_a_clear_backend_error(tmp_path):
    checks, proc = run_dragon("not_under_dragon.py", tmp=str(tmp_path), timeout=60,
                              launcher=[sys.executable])
    r = checks.get("error")
    assert r is not None, proc.stderr[-2000:]
    assert r["type"] == "BackendError"
    assert "dragon -s script.py" in r["message"]
    assert r["state"] == "FAILED"


def test_values_and_functions_standard_pickle_refuses(modes):
    assert modes["lambda_return"] == {"check": "lambda_return", "state": "DONE", "adds": 42}
    u = modes["unpicklable_fn"]  # a closure over a lock cannot travel: its task fails alone
    assert u["state"] == "FAILED" and "lock" in u["stderr"].lower()


def test_tutorial_heterogeneous_workload(modes):
    t = modes["tutorial"]
    assert t["states"] == ["DONE"] * 5
    out = t["outputs"]
    assert out[0].startswith("[nested] ") and out[1].startswith("[exec-single] ")
    assert len(out[2].splitlines()) == 4 and all(
        line.startswith("[exec-parallel] ") for line in out[2].splitlines())
    assert out[3].startswith("[nested] ")
    assert len(out[4]) == 4 and all(v.startswith("[nested] ") for v in out[4])


def test_statistics_see_every_task(modes):
    st = modes["statistics"]
    assert st["total"] == sum(st["counts"].get(k, 0) for k in ("DONE", "FAILED", "CANCELED"))
    assert st["counts"]["DONE"] >= 14 and st["counts"]["FAILED"] >= 8


def test_dead_pool_worker_fails_only_its_task(modes):
    r = modes["native_crash"]
    assert r["crash"]["state"] == "FAILED", r
    assert "died" in r["crash"]["stderr"] and "BackendError" in r["crash"]["exception"]
    assert r["others"] == ["DONE"] and r["values_ok"]
    again = modes["respawn"]  # a new worker took the dead one's place
    assert again["states"] == ["DONE", "DONE"], again
    assert len(set(again["pids"])) == 2 and again["dead_pid"] not in again["pids"], again


def test_chunks_of_one_function_without_arguments(modes):
    r = modes["bulk"]
    assert r["null_states"] == ["DONE"] and r["null_values"] == ["None"], r
    assert r["null_stdout"] == ["None"] and r["null_codes"] == [0], r
    assert r["pid_states"] == ["DONE"] and r["pids_ok"], r
    assert r["done_count"] >= 3500, r
    r = modes["mixed"]
    assert r["wrong"] == [] and r["failed_key"] == ["KeyError(7)"], r


@pytest.mark.parametrize("outcomes", [
    [(True, 1.0, 2.0, 5, None)],  # a list of outcomes, one short
    (b"", b""),  # a null chunk's start and end times, all missing
])
def test_a_chunk_with_outcomes_missing_fails_every_task_of_it(outcomes):
    """A pool result whose length differs from its chunk's fails the whole chunk, saying
    so (which outcome is whose is unknown): no task is left without an outcome. This runs
    the result callback alone, beside the real chunks of test_chunks_of_one_function..."""
    from rhapsody_lab.api import ComputeTask
    from rhapsody_lab.backends import DragonExecutionBackendV3
    backend = DragonExecutionBackendV3(num_workers=1)
    tasks = [dict(ComputeTask(function=int)) for _ in range(2)]
    backend._chunks[7] = (tasks, False, {}, [])
    backend._wake_pending = True  # no loop here: a drain counts as already scheduled
    backend._chunk_done(7, (4242, outcomes))
    states = [(t["uid"], state) for t, state, _when, _pid in backend._done]
    assert states == [(t["uid"], "FAILED") for t in tasks]
    assert all("returned" in str(t["exception"]) and "for 2 tasks" in str(t["exception"])
               for t in tasks)
    assert 7 not in backend._chunks
