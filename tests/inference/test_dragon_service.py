"""Services (and the vLLM backend's managed server) placed through a real Dragon runtime.

``dragon_service_checks.py`` runs every check under one ``dragon -s`` launch (the runner of
``tests/backends/test_dragon.py``, which also checks that no process carrying the run's token
and no /dev/shm segment of that runtime is left afterwards) and prints one JSON line per
check; the tests below assert on those lines. The stand-in OpenAI server plays the service;
a real vLLM server is placed in one extra test when its venv is installed. Skipped only
where dragonhpc is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

import pytest

from rhapsody_lab.api.errors import BackendError
from rhapsody_lab.backends.inference.vllm import default_vllm_python, vllm_home
from rhapsody_lab.services import Service

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "dragon_service_checks.py")


def _runner():
    """``run_dragon`` of tests/backends/test_dragon.py (loaded by path, not duplicated)."""
    path = os.path.join(os.path.dirname(HERE), "backends", "test_dragon.py")
    spec = importlib.util.spec_from_file_location("_rhapsody_dragon_runner", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RUNNER = _runner()
needs_dragon = pytest.mark.skipif(
    importlib.util.find_spec("dragon") is None or RUNNER.DRAGON is None,
    reason="dragonhpc is not installed (pip install 'rhapsody-lab[dragon]')")


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dragon_service"))
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    found, proc = RUNNER.run_dragon(SCRIPT, out, tmp=tmp, timeout=180)
    if "done" not in found:
        pytest.fail(f"dragon_service_checks.py did not finish (rc {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return found


@needs_dragon
def test_service_placed_through_dragon_is_ready_and_serves(checks):
    nodes = checks["nodes"]["nodes"]
    p = checks["placed"]
    assert p["state"] == "READY" and p["alive"] and p["dragon_alive"]
    assert p["host"] in nodes
    assert p["placement"] == f"dragon on {p['host']} (puid {p['puid']})"
    assert isinstance(p["puid"], int) and p["pid"] is None
    # the endpoint names the node it was placed on
    assert p["endpoint"].startswith(f"http://{p['host']}:") and p["endpoint"].endswith("/v1")
    assert p["ready_url"] == p["endpoint"] + "/models"
    assert p["answer"] == "4"
    assert "fake OpenAI server on" in p["tail"]  # its output reached the log file
    assert p["tagged"] == 2  # the server and the child its shell left running


@needs_dragon
def test_stop_ends_the_dragon_process_and_its_children(checks):
    s = checks["stopped"]
    assert s["state"] == "STOPPED" and not s["alive"] and not s["dragon_alive"]
    assert s["returncode"] == -15 and s["exits"] == [-15]
    assert s["tagged_left"] == []


@needs_dragon
def test_host_pins_the_node(checks):
    p = checks["pinned"]
    node = checks["nodes"]["nodes"][0]
    assert p["host"] == node and p["placement"].startswith(f"dragon on {node} (puid ")
    assert p["endpoint"].startswith(f"http://{node}:") and p["answer"] == "4"


@needs_dragon
def test_killed_process_fires_on_exit_and_is_not_restarted(checks):
    k = checks["killed"]
    assert k["exits"] == [["FAILED", -9]]
    assert k["state"] == "FAILED" and not k["alive"]
    assert k["tagged_left"] == []  # the watcher ended what the dead leader left behind


@needs_dragon
def test_unknown_host_raises_resource_error_naming_it(checks):
    b = checks["bad_host"]
    assert b["raised"] == "ResourceError" and b["state"] == "FAILED"
    assert "no-such-node-42" in b["message"] and "not a node" in b["message"]


@needs_dragon
def test_early_exit_fails_start_with_last_log_lines(checks):
    e = checks["early_exit"]
    assert e["raised"] == "BackendError" and e["state"] == "FAILED"
    assert "code 3" in e["message"] and "cannot load model xyz-42" in e["message"]
    assert e["placement"].startswith("dragon on ")


@needs_dragon
def test_local_placement_under_dragon_is_a_local_process(checks):
    loc = checks["local"]
    assert loc["placement"] == "local" and isinstance(loc["pid"], int) and loc["puid"] is None
    assert loc["ready_url"].startswith("http://127.0.0.1:")


@needs_dragon
def test_vllm_backend_server_is_a_dragon_process(checks):
    v = checks["vllm_backend"]
    assert v["placement"].startswith(f"dragon on {v['host']} (puid {v['puid']})")
    assert v["endpoint"].startswith(f"http://{v['host']}:") and v["dragon_alive"]
    assert v["states"] == ["DONE", "DONE", "DONE"]
    assert v["responses"][0] == "4" and v["responses"][1] == ["echo: a", "4"]
    assert v["backends"] == ["vllm"] * 3
    c = checks["vllm_backend_closed"]
    assert c["state"] == "STOPPED" and not c["alive"] and not c["dragon_alive"]
    assert c["tagged_left"] == []


@needs_dragon
def test_session_start_service_places_through_dragon(checks):
    node = checks["nodes"]["nodes"][0]
    s = checks["session_service"]
    assert s["placement"].startswith(f"dragon on {node} (puid ")
    assert s["endpoint"].startswith(f"http://{node}:") and s["answer"] == "4"
    assert s["log"].endswith(".echo.log")  # the session's work_dir log
    c = checks["session_service_closed"]  # close() stopped it
    assert c["state"] == "STOPPED" and not c["alive"] and c["tagged_left"] == []


@needs_dragon
def test_nothing_left_after_the_runtime_exits(checks):
    # a service the script never stopped is ended when its interpreter exits
    assert checks["orphan_started"]["alive"]
    assert checks["_after"] == {"processes": [], "shm": []}


def test_dragon_placement_outside_dragon_says_how_to_start():
    env_keys = ("DRAGON_MY_PUID", "DRAGON_INF_PD")
    if any(os.environ.get(k) for k in env_keys):
        pytest.skip("this test process runs under Dragon")
    for kw in ({"placement": "dragon"}, {"host": "node7"}):
        svc = Service("svc", [sys.executable, "-c", "pass"], **kw)
        with pytest.raises(BackendError, match=r"dragon -s script\.py") as err:
            asyncio.run(svc.start())
        assert svc.state == "NEW" and svc.pid is None  # refused before anything started
        assert ("placement='dragon'" if "placement" in kw else "host='node7'") in str(err.value)
    with pytest.raises(BackendError, match="placement='local'"):
        Service("svc", [sys.executable, "-c", "pass"], placement="local", host="node7")


@needs_dragon
@pytest.mark.slow
def test_real_vllm_server_placed_through_dragon(tmp_path):
    python = default_vllm_python()
    model = os.environ.get("RHAPSODY_VLLM_MODEL") or os.path.join(
        vllm_home(), "models", "smollm2-135m-hf")
    if python is None or not os.path.isfile(os.path.join(model, "config.json")):
        pytest.skip(f"vLLM venv or model missing under {vllm_home()}; run "
                    ".ci/setup.d/50-vllm.sh")
    out = str(tmp_path / "out")
    os.mkdir(out)
    found, proc = RUNNER.run_dragon(SCRIPT, out, "vllm", tmp=str(tmp_path), timeout=170)
    assert "done" in found, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                            f"{proc.stderr[-3000:]}"
    r = found["real_vllm"]
    assert r["placement"].startswith("dragon on ") and r["dragon_alive"]
    assert r["state"] == "DONE", r["stderr"]
    assert isinstance(r["response"], str) and "4" in r["response"]
    c = found["real_vllm_closed"]
    assert not c["alive"] and c["tagged_left"] == []
    assert found["_after"] == {"processes": [], "shm": []}
