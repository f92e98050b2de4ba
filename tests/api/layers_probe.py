"""Run by test_layers.py in a fresh interpreter: the engine reaches the upper layers only
through the providers they register.

A meta-path finder refuses (``ImportError``) any upper-layer or runtime package that an
engine module (``rhapsody_lab.api.*``) tries to import, and records who imported each of
them first. Then ``Session.from_policy``, ``Session.start_service`` (local, and placed
through an injected Dragon launcher) and ``Session.dashboard()`` run; the last line printed
is ``OK`` and the importer of each provider module (``rhapsody_lab``: the top package's
loaders), or the violations.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys

ENGINE = ("rhapsody_lab.api",)
UPPER = ("rhapsody_lab.backends", "rhapsody_lab.policy", "rhapsody_lab.dashboard",
         "rhapsody_lab.notebook", "rhapsody_lab.observe", "rhapsody_lab.server",
         "rhapsody_lab.services", "rhapsody_lab.telemetry")
RUNTIMES = {"bokeh", "jupyter_bokeh", "IPython", "ipywidgets", "jupyter_server",
            "jupyter_client", "dask", "distributed", "dragon", "numpy", "yaml",
            "opentelemetry", "psutil", "pynvml"}
violations: list[str] = []
first_importer: dict[str, str] = {}


def _importer() -> str:
    """The module whose code runs the import (the first frame outside importlib)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")):
            return name
        frame = frame.f_back
    return "?"


class Guard:
    def find_spec(self, name: str, path=None, target=None):
        if not name.startswith(UPPER) and name.partition(".")[0] not in RUNTIMES:
            return None
        who = _importer()
        first_importer.setdefault(name, who)
        if who.startswith(ENGINE):
            violations.append(f"{who} imports {name}")
            raise ImportError(f"layering: engine module {who} imports {name}")
        return None  # let the real finders find it


sys.meta_path.insert(0, Guard())

from rhapsody_lab.api import ComputeTask, Session, extensions  # noqa: E402
from rhapsody_lab.api.backend import BaseBackend  # noqa: E402
from rhapsody_lab.resources import Allocation  # noqa: E402

HAVE_OTEL = importlib.util.find_spec("opentelemetry") is not None
loaded = sorted(m for m in sys.modules if m.startswith(UPPER))
assert not loaded, f"importing the engine loaded {loaded}"


class FakeProc:
    """What the launcher returns: a Dragon process, here a local one."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.puid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def join(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.popen.kill()


class FakeLauncher:
    """A ``"services.dragon"`` provider, injected in place of backends._dragon_launch."""

    TOKEN_ENV = "RHAPSODY_SERVICE_TOKEN"
    calls: list[str] = []

    @staticmethod
    def child_env(extra):
        return {**{k: v for k, v in os.environ.items() if not k.startswith("DRAGON_")},
                **extra}

    @classmethod
    def start_process(cls, command, *, env, cwd, log_file, host, who):
        cls.calls.append("start")
        with open(log_file, "ab") as log:
            popen = subprocess.Popen(command, env=env, cwd=cwd, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return FakeProc(popen), "fake-node"

    @classmethod
    def stop_process(cls, proc, grace):
        cls.calls.append("stop")
        proc.popen.terminate()
        return proc.join(grace)

    @classmethod
    def kill_tagged(cls, token, hostname):
        cls.calls.append(f"kill_tagged {hostname}")


def null():
    return 1


async def main(work_dir: str) -> dict:
    out: dict = {}
    policy = {"backends": {"fn": {"type": "concurrent", "cores": 1, "limit": 1}},
              "default": "fn"}
    async with Session.from_policy(policy, Allocation(("n0",), (1,), (0,), "local"),
                                   work_dir=work_dir) as s:
        backend = s.backends["fn"]
        out["limited"] = type(backend).__name__
        assert isinstance(backend, BaseBackend)
        tasks = [ComputeTask(function=null) for _ in range(5)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks, timeout=30)
        out["states"] = sorted({t.state for t in tasks})

        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        local = await s.start_service("local", sleeper, startup_timeout=20)
        out["local"] = local.placement

        real = extensions.provider("services.dragon")  # the top package's loader
        out["dragon_launcher"] = real.__name__
        extensions.register_provider("services.dragon", FakeLauncher)
        os.environ.update(DRAGON_MY_PUID="1", DRAGON_INF_PD="probe")  # "under Dragon"
        try:
            placed = await s.start_service("placed", sleeper, startup_timeout=20)
        finally:
            del os.environ["DRAGON_MY_PUID"], os.environ["DRAGON_INF_PD"]
        out["placed"] = placed.placement.split(" (")[0]

        if HAVE_OTEL:  # start_telemetry reaches rhapsody_lab.telemetry through its provider
            telemetry = await s.start_telemetry()
            more = [ComputeTask(function=null) for _ in range(3)]
            await s.submit_tasks(more)
            await s.wait_tasks(more, timeout=30)
            out["telemetry_completed"] = telemetry.task_count()["completed"]

        widget = s.dashboard(plots=["task-states"])
        out["dashboard"] = type(widget).__name__
        widget.stop()
    out["after_close"] = [local.state, placed.state, local.is_alive(), placed.is_alive()]
    out["launcher_calls"] = FakeLauncher.calls
    return out


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1]))
    result["importers"] = {m: first_importer.get(m) for m in (
        "rhapsody_lab.policy", "rhapsody_lab.dashboard",
        "rhapsody_lab.backends._dragon_launch",
        *(["rhapsody_lab.telemetry"] if HAVE_OTEL else []))}
    print(json.dumps(violations or ["OK", result]))
