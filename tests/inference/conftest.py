"""Fixtures of the inference tests.

``vllm``: one real vLLM CPU server (SmolLM2-135M), started through the backend as a managed
service once per test session and shared; its backend lives on a background event loop, so
tests drive it with ``vllm.run(coro)``. Other tests attach their own backends to
``vllm.endpoint``. Skips with a reason when the vLLM venv of ``.ci/setup.d/50-vllm.sh`` is
missing. ``fake_server``: a stand-in OpenAI-compatible server for the fast fault tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from types import SimpleNamespace

import pytest

from rhapsody_lab.backends.inference.vllm import (
    VllmInferenceBackend,
    default_vllm_python,
    vllm_home,
)

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from inference_helpers import start_fake  # noqa: E402


def vllm_model_dir() -> str:
    return os.environ.get("RHAPSODY_VLLM_MODEL") or os.path.join(
        vllm_home(), "models", "smollm2-135m-hf")


class LoopThread:
    """An event loop running in a thread, shared by the tests of the session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="vllm-test-loop")
        self.thread.start()

    def run(self, coro, timeout: float = 200):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def vllm():
    python = default_vllm_python()
    model = vllm_model_dir()
    if python is None or not os.path.exists(python):
        pytest.skip(f"vLLM venv missing (no {vllm_home()}/bin/python and no "
                    "$RHAPSODY_VLLM_PYTHON); run .ci/setup.d/50-vllm.sh")
    if not os.path.isfile(os.path.join(model, "config.json")):
        pytest.skip(f"vLLM model folder {model} missing; run .ci/setup.d/50-vllm.sh")
    lt = LoopThread()
    backend = VllmInferenceBackend(model_name=model, python=python, port=0,
                                   max_batch_wait_ms=20, startup_timeout=280, name="vllm")
    try:
        lt.run(backend.initialize(), timeout=300)
    except BaseException:
        lt.close()
        raise
    yield SimpleNamespace(backend=backend, endpoint=backend.endpoint, run=lt.run,
                          model=backend.served_model_name)
    try:
        lt.run(backend.shutdown(), timeout=60)
    finally:
        lt.close()


@pytest.fixture
def fake_server():
    svc = start_fake()
    yield svc
    asyncio.run(svc.stop())


@pytest.fixture
def slow_fake_server():
    svc = start_fake(delay=3.0)
    yield svc
    asyncio.run(svc.stop())
