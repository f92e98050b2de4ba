"""DragonDataBackend on a real Dragon DDict.

One script (``dragon_scripts/data_ddict.py``) runs under ``dragon -s`` and prints a JSON
line per check (Dragon launches cost seconds); the runtime's processes and /dev/shm
segments are checked after it exits. Outside a runtime the backend must refuse clearly.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from rhapsody_lab.api import Session, SessionError
from rhapsody_lab.backends.data import (
    DataBackendStartupError,
    DataBackendState,
    DragonDataBackend,
    DragonEndpoint,
)


def _test_dragon():
    """test_dragon.py's Dragon launcher (``run_dragon``: processes and /dev/shm checked).

    The tests run with ``--import-mode=importlib``, so a sibling module is loaded by path.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_dragon.py")
    spec = importlib.util.spec_from_file_location("_rhapsody_test_dragon_launcher", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ddict(tmp_path_factory):
    launcher = _test_dragon()
    if launcher.DRAGON is None:
        pytest.skip("dragonhpc is not installed (pip install 'rhapsody-lab[dragon]')")
    checks, proc = launcher.run_dragon("data_ddict.py", tmp=str(tmp_path_factory.mktemp("ddict")))
    if "done" not in checks:
        pytest.fail(f"data_ddict.py did not finish (rc {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return checks


def test_bad_arguments_are_refused_naming_the_field(ddict):
    refused = ddict["refused"]["messages"]
    assert all(refused), refused
    for msg, field in zip(refused, ["_wait_for_keys", "wait_for_keys", "working_set_size",
                                    "n_nodes"], strict=True):
        assert msg.startswith("DragonDataBackend: ") and field in msg


def test_start_ready_endpoint_and_attach(ddict):
    s = ddict["started"]
    assert s["state"] == "READY" and s["ready"] is True
    assert s["descriptor_len"] > 0
    assert s["seen"] == 42  # written through the backend, read through DDict.attach


def test_shutdown_destroys_the_ddict(ddict):
    assert ddict["shutdown"] == {"check": "shutdown", "state": "SHUTDOWN", "ready": False,
                                 "ddict": True}


def test_session_starts_it_a_task_uses_it_and_close_destroys_it(ddict):
    s = ddict["session"]
    assert s["state"] == "READY" and s["names"] == ["store"] and s["exec_names"] == ["dragon"]
    assert s["task_state"] == "DONE", s
    assert s["task_value"] == "from the driver"  # a Dragon worker attached by descriptor
    assert ddict["closed"]["state"] == "SHUTDOWN"


def test_nothing_left_after_the_runtime_exits(ddict):
    assert ddict["_after"] == {"processes": [], "shm": []}


async def test_outside_a_dragon_runtime_it_refuses_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("DRAGON_MY_PUID", raising=False)
    monkeypatch.delenv("DRAGON_INF_PD", raising=False)
    backend = DragonDataBackend(name="dd")
    with pytest.raises(DataBackendStartupError, match=r"dragon -s script\.py"):
        await backend.start()
    assert backend.state is DataBackendState.FAILED
    session = Session([DragonDataBackend()], work_dir=tmp_path)
    with pytest.raises(DataBackendStartupError, match="no Dragon runtime"):
        await session.start()
    await session.close()
    assert session.data_backends["dragon"].state is DataBackendState.SHUTDOWN


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"_wait_for_keys": False}, "_wait_for_keys"),
    ({"wait_for_keys": True}, "wait_for_keys"),
    ({"working_set_size": 1}, "working_set_size"),
    ({"total_mem": "1GB"}, "total_mem"),
    ({"name": ""}, "name"),
])
def test_bad_arguments_without_dragon(kwargs, field):
    with pytest.raises(SessionError, match=field):
        DragonDataBackend(**kwargs)


def test_without_dragonhpc_construction_fails_as_an_import_error(monkeypatch):
    from rhapsody_lab.backends.data import dragon as module
    real = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "dragon" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'rhapsody-lab\[dragon\]'") as err:
        DragonDataBackend()
    assert isinstance(err.value, module.DragonNotInstalledError)


def test_endpoint_serializes_to_its_descriptor():
    assert DragonEndpoint("abc").serialize() == "abc"
