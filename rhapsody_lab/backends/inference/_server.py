"""The managed vLLM server of an inference backend: its command, environment and launch.

Mixed into ``VllmInferenceBackend`` (which owns the attributes used here): ``_launch``
starts vLLM's own OpenAI server as a ``Service`` (a local process, or a Dragon process
under a Dragon runtime) and waits until it answers; ``_service_exited`` fails what is
pending when the server ends on its own (nothing is restarted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from ...api.errors import BackendError
from ...services import Service, free_port, resolve_placement

__all__ = ["VLLM_HOME_ENV", "VLLM_PYTHON_ENV", "ManagedServer", "default_vllm_python",
           "has_gpu", "vllm_home"]

log = logging.getLogger(__name__)

#: where ``.ci/setup.d/50-vllm.sh`` installs vLLM (override with RHAPSODY_VLLM_HOME)
VLLM_HOME_ENV = "RHAPSODY_VLLM_HOME"
VLLM_PYTHON_ENV = "RHAPSODY_VLLM_PYTHON"
_CPU_ARGS = ["--max-model-len", "1024", "--dtype", "bfloat16", "--enforce-eager"]
#: ``host`` values that pin no node under Dragon (the runtime places the server)
_ANY_HOST = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})

def vllm_home() -> str:
    return os.environ.get(VLLM_HOME_ENV) or os.path.expanduser(
        "~/.cache/rhapsody_lab/vllm-venv")


def default_vllm_python() -> str | None:
    """The python of the vLLM install: $RHAPSODY_VLLM_PYTHON, the cached venv, or None."""
    exe = os.environ.get(VLLM_PYTHON_ENV)
    if exe:
        return exe
    exe = os.path.join(vllm_home(), "bin", "python")
    return exe if os.path.exists(exe) else None



def has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))



def _call_soon(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass



class ManagedServer:
    """Launching and watching the managed server (see the module docstring)."""

    def _command(self, bind: str | None = None) -> list[str]:
        bind = self.host if bind is None else bind
        if self.server_command is not None:
            return [c.replace("{port}", str(self.port)).replace("{host}", bind)
                    for c in self.server_command]
        python = self.python or default_vllm_python()
        if python is None:
            raise BackendError(self.name, f"no vLLM python found: pass python=, set "
                               f"${VLLM_PYTHON_ENV}, or install it with "
                               f".ci/setup.d/50-vllm.sh (into {vllm_home()})")
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server",
               "--model", self.load_model, "--host", bind, "--port", str(self.port)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if self.tp_size > 1:
            cmd += ["--tensor-parallel-size", str(self.tp_size)]
        args = self.server_args
        if args is None and not has_gpu():
            args = _CPU_ARGS
        return cmd + list(args or [])

    def _service_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if not has_gpu():
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
            env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND",
                                                              "auto")
        if self.load_model and os.path.isdir(self.load_model):
            env["HF_HUB_OFFLINE"] = "1"
            env["TRANSFORMERS_OFFLINE"] = "1"
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    async def _launch(self) -> None:
        dragon = resolve_placement(self.placement, self.name) == "dragon"
        node = None
        if dragon:
            # under Dragon ``host`` names the node to run on; a loopback or wildcard address
            # leaves the choice to the runtime, and the server then listens on every
            # interface of whichever node it gets (its name is known only once placed)
            node = None if self.host in _ANY_HOST else self.host
            bind = node or "0.0.0.0"
        else:
            bind = self.host
        if self.port == 0:
            self.port = free_port("127.0.0.1" if dragon else self.host)
        if self.served_model_name is None and self.server_command is None:
            self.served_model_name = os.path.basename(os.path.normpath(self.load_model))
        if dragon:
            endpoint = f"http://{{host}}:{self.port}/v1"  # the Service fills in the node
        else:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
            endpoint = f"http://{host}:{self.port}/v1"
        self._endpoint = endpoint
        log_file = self.log_file  # None: a temp file (keeps the user's directory clean)
        self.service = Service(
            self.name, self._command(bind), ready_url=f"{endpoint}/models",
            endpoint=endpoint, env=self._service_env(), log_file=log_file,
            startup_timeout=self.startup_timeout,
            placement="dragon" if dragon else "local", host=node)
        loop = asyncio.get_running_loop()
        self.service.on_exit(lambda svc: _call_soon(loop, self._service_exited, svc))
        try:
            await self.service.start()
        finally:
            self._endpoint = self.service.endpoint
        log.info("%s: vLLM server ready at %s (%s, log %s)", self.name, self._endpoint,
                 self.service.placement, self.service.log_file)

    def _service_exited(self, svc: Service) -> None:
        """The managed server ended on its own: fail what is pending, restart nothing."""
        if self._backend_state in ("SHUTDOWN",) or svc._stopping:
            return
        self._failure = BackendError(
            self.name, f"the vLLM server at {self._endpoint} exited with code "
            f"{svc.returncode}; it is not restarted (create a new backend). Last log lines "
            f"of {svc.log_file}:\n{svc.tail(15)}")
        if self._backend_state in ("RUNNING", "STARTING"):
            self._backend_state = "FAILED"
        now = time.time()
        for task in list(self._live.values()):
            self._fail(task, self._failure, now)
        self._batch.clear()
        self._wake()

