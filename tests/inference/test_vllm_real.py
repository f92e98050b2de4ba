# ruff: noqa: N806, B905  (the tutorial's train_classifier is kept verbatim)
"""The backend with vLLM's own OpenAI server on the CPU (SmolLM2-135M-Instruct).

One server for the whole test session (``vllm`` fixture, started through the backend as a
managed service). Answers are checked for structure and a simple fact, never for wording.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import BackendError
from rhapsody_lab.backends import (
    ConcurrentExecutionBackend,
    DragonVllmInferenceBackend,
    VllmInferenceBackend,
)

pytestmark = pytest.mark.slow


async def _run_direct(backend, tasks, timeout=120):
    """Submit straight to a backend (no Session) and wait for the terminal states."""
    await backend.submit_tasks(tasks)
    deadline = time.monotonic() + timeout
    while any(t.state not in ("DONE", "FAILED", "CANCELED") for t in tasks):
        assert time.monotonic() < deadline, [t.state for t in tasks]
        await asyncio.sleep(0.05)


def test_managed_server_answers_a_fact(vllm):
    b = vllm.backend
    assert b.managed and b.service.state == "READY" and b.service.is_alive()
    events = []
    b.emit = events.append
    try:
        t = AITask(backend=b.name, prompt="What is 2+2? Answer with just the number.",
                   temperature=0.0, max_tokens=16)
        vllm.run(_run_direct(b, [t]))
    finally:
        b.emit = lambda e: None
    assert t.state == "DONE", t.stderr
    assert isinstance(t.response, str) and t.response.strip()
    assert "4" in t.response
    assert t.return_value == t.response
    assert 0 < t.usage["completion_tokens"] <= 16
    states = [e[2] for e in events if e[1] == t.uid]
    assert states == ["QUEUED", "RUNNING", "DONE"]
    assert all(e[3] == "vllm" for e in events)


def test_list_prompt_and_sampling_parameters(vllm):
    t = AITask(backend="vllm", prompt=["Name a fruit.", "Name a color.", "Name an animal."],
               system_prompt="Answer in one word.", temperature=0.7, top_p=0.9, top_k=20,
               max_tokens=5, stop_sequences=["\n\n"])
    short = AITask(backend="vllm", prompt="Count from 1 to 50.", max_tokens=3, temperature=0.0)
    vllm.run(_run_direct(vllm.backend, [t, short]))
    assert t.state == "DONE" and short.state == "DONE"
    assert isinstance(t.response, list) and len(t.response) == 3
    assert all(isinstance(r, str) for r in t.response)
    assert t.usage["completion_tokens"] <= 15
    assert short.usage["completion_tokens"] <= 3  # max_tokens reached the server


def test_many_prompts_batched_concurrently(vllm):
    ts = [AITask(backend="vllm", prompt=f"Say the number {i}.", max_tokens=8, temperature=0.0)
          for i in range(24)]
    before = vllm.backend.batches_sent
    t0 = time.monotonic()
    vllm.run(_run_direct(vllm.backend, ts))
    wall = time.monotonic() - t0
    assert all(t.state == "DONE" and t.response for t in ts)
    assert vllm.backend.batches_sent - before == 1  # one batch of 24, sent concurrently
    assert wall < 60


async def test_attach_mode_discovers_the_model(vllm):
    b = VllmInferenceBackend(endpoint=vllm.endpoint, name="attached", max_batch_wait_ms=10)
    async with Session([b]) as s:
        assert not b.managed and b.served_model_name == vllm.model
        t = AITask(backend=b.name, prompt="What is 2+2?", max_tokens=16, temperature=0.0)
        await s.submit_tasks([t])
        await t
        assert t.state == "DONE" and "4" in t.response
    with pytest.raises(BackendError, match="not served"):
        await VllmInferenceBackend(endpoint=vllm.endpoint, model_name="Qwen2.5-0.5B-Instruct")


async def test_task_state_shows_running_while_generating(vllm):
    """A user polling ``t.state`` sees RUNNING while the server generates."""
    b = VllmInferenceBackend(endpoint=vllm.endpoint, name="polled", max_batch_wait_ms=5)
    async with Session([b]) as s:
        t = AITask(backend=b.name, prompt="Count from 1 to 200, one number per line.",
                   max_tokens=160, temperature=0.0)
        await s.submit_tasks([t])
        seen = {t.state}
        while t.state not in ("DONE", "FAILED", "CANCELED"):
            seen.add(t.state)
            await asyncio.sleep(0.01)
        assert "RUNNING" in seen and t.state == "DONE", (seen, t.stderr)


def train_classifier(generated_texts):
    """The tutorial's Phase 2 function (Part 3.4), unchanged."""
    import random

    n_samples = max(len(generated_texts) * 10, 100)
    X = [[random.gauss(0, 1) for _ in range(4)] for _ in range(n_samples)]
    y = [1 if sum(row) > 0 else 0 for row in X]
    split = int(0.8 * n_samples)
    X_train, X_test = X[:split], X[split:]
    y_train, y_test = y[:split], y[split:]
    class_0 = [x for x, label in zip(X_train, y_train) if label == 0]
    class_1 = [x for x, label in zip(X_train, y_train) if label == 1]
    centroid_0 = [sum(col) / len(col) for col in zip(*class_0)] if class_0 else [0] * 4
    centroid_1 = [sum(col) / len(col) for col in zip(*class_1)] if class_1 else [0] * 4

    def predict(x):
        d0 = sum((a - b) ** 2 for a, b in zip(x, centroid_0))
        d1 = sum((a - b) ** 2 for a, b in zip(x, centroid_1))
        return 0 if d0 < d1 else 1

    predictions = [predict(x) for x in X_test]
    accuracy = sum(p == t for p, t in zip(predictions, y_test)) / len(y_test)
    return {"model": "NearestCentroid", "n_train": len(X_train), "n_test": len(X_test),
            "accuracy": round(accuracy, 4), "data_source": "LLM-generated"}


async def test_tutorial_ai_hpc_pipeline(vllm, tmp_path):
    """Seed tutorial Part 3.3/3.4: mixed tasks, then inference -> training, in one session.

    The config file points the tutorial's backend at the running server and serves the
    tutorial's model name from it; the execution backend is the concurrent one.
    """
    config = tmp_path / "config.yaml"
    config.write_text(f"endpoint: {vllm.endpoint}\nmax_concurrency: 16\n")
    execution_backend = await ConcurrentExecutionBackend()
    inference_backend = DragonVllmInferenceBackend(
        config_file=str(config), model_name=vllm.model, num_nodes=1, num_gpus=1,
        tp_size=1, port=8001, max_batch_wait_ms=50)
    await inference_backend.initialize()
    session = Session([execution_backend, inference_backend])

    # 3.3: mixed tasks routed by backend name
    mixed = [
        AITask(prompt="Explain what a neural network is in one sentence.",
               backend=inference_backend.name, max_tokens=40),
        AITask(prompt=["Generate a random floating-point number between 0 and 1.",
                       "Generate a random integer between 1 and 100."],
               backend=inference_backend.name, max_tokens=20),
        ComputeTask(executable="/usr/bin/echo", arguments=["Hello from the backend!"],
                    backend=execution_backend.name),
    ]
    await session.submit_tasks(mixed)
    results = await asyncio.gather(*mixed)
    assert isinstance(results[0].response, str) and results[0].response
    assert isinstance(results[1].response, list) and len(results[1].response) == 2
    assert results[2].stdout.strip() == "Hello from the backend!"
    assert [t.backend for t in results] == ["vllm", "vllm", "concurrent"]

    # 3.4 Phase 1: synthetic data via inference
    data_prompts = [
        "Generate a JSON object with 4 numeric features (f1, f2, f3, f4) "
        "each between -2 and 2, and a binary label (0 or 1). "
        "Example: {\"f1\": 0.5, \"f2\": -1.2, \"f3\": 0.8, \"f4\": -0.3, \"label\": 1}"
        for _ in range(10)
    ]
    inference_tasks = [AITask(prompt=p, backend=inference_backend.name, max_tokens=100,
                              temperature=0.8) for p in data_prompts]
    await session.submit_tasks(inference_tasks)
    await asyncio.gather(*inference_tasks)
    generated_texts = [str(t.response) for t in inference_tasks]
    assert all(t.state == "DONE" for t in inference_tasks)
    assert all(len(g) > 0 for g in generated_texts)

    # Phase 2: training on the execution backend
    training_task = ComputeTask(function=train_classifier, args=(generated_texts,),
                                backend=execution_backend.name)
    await session.submit_tasks([training_task])
    await asyncio.gather(training_task)
    result = training_task.return_value
    assert result["model"] == "NearestCentroid" and result["n_train"] == 80
    assert 0.0 <= result["accuracy"] <= 1.0

    stats = session.get_statistics()
    assert stats["summary"]["total_tasks"] == 14
    assert dict(stats["counts"])["DONE"] == 14
    await session.close()
    assert vllm.backend.service.is_alive()  # the attached session never stops the server
