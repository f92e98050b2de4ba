"""The inference backend against a stand-in OpenAI server: parameters, batching, faults."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from inference_helpers import FAKE_SERVER, seen_requests

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import (
    BackendError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody_lab.backends import (
    ConcurrentExecutionBackend,
    DragonVllmInferenceBackend,
    VllmInferenceBackend,
)
from rhapsody_lab.services import Service, ServiceSet, free_port


def double(x):
    return 2 * x


async def test_parameters_reach_the_server(fake_server):
    b = VllmInferenceBackend(endpoint=fake_server.endpoint, max_batch_wait_ms=5)
    async with Session([b]) as s:
        t = AITask(backend=b.name, prompt="What is 2+2?", system_prompt="Be terse.",
                   temperature=0.3, max_tokens=7, top_p=0.5, top_k=11,
                   stop_sequences=["\n\n", "END"])
        await s.submit_tasks([t])
        await t
    assert t.state == "DONE" and t.response == "4" and t.return_value == "4"
    assert b.served_model_name == "fake-model"  # discovered from /v1/models
    (req,) = [r for r in seen_requests(fake_server) if r["path"].endswith("/completions")]
    body = req["body"]
    assert req["path"] == "/v1/chat/completions"
    assert body["model"] == "fake-model"
    assert body["messages"] == [{"role": "system", "content": "Be terse."},
                                {"role": "user", "content": "What is 2+2?"}]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["top_k"]) == \
        (0.3, 7, 0.5, 11)
    assert body["stop"] == ["\n\n", "END"]


async def test_list_prompt_completions_api_and_task_model(fake_server):
    b = VllmInferenceBackend(endpoint=fake_server.endpoint, api="completions",
                             max_batch_wait_ms=5)
    async with Session([b]) as s:
        t = AITask(prompt=["a b", "2+2=", "c"], model="fake-model")
        await s.submit_tasks([t])
        await t
    assert t.response == ["echo: a b", "4", "echo: c"]
    assert t.usage["prompt_tokens"] == 4
    paths = {r["path"] for r in seen_requests(fake_server)}
    assert "/v1/completions" in paths


async def test_http_4xx_fails_only_that_task(fake_server):
    b = VllmInferenceBackend(endpoint=fake_server.endpoint, max_batch_wait_ms=5)
    async with Session([b]) as s:
        bad = AITask(prompt="hi", model="no-such-model")
        good = AITask(backend=b.name, prompt="hi")
        await s.submit_tasks([bad, good])
        await s.wait_tasks([bad, good])
    assert good.state == "DONE"
    assert bad.state == "FAILED" and isinstance(bad.exception, TaskExecutionError)
    assert "no-such-model" in str(bad.exception) and "404" in str(bad.exception)


async def test_invalid_sampling_rejected_before_anything_is_sent(fake_server):
    b = await VllmInferenceBackend(endpoint=fake_server.endpoint, max_batch_wait_ms=5)
    ok = AITask(backend=b.name, prompt="fine")
    bad = AITask(backend=b.name, prompt="hot")
    bad["temperature"] = 7.5  # bypasses the constructor's check
    with pytest.raises(TaskValidationError, match="temperature") as err:
        await b.submit_tasks([ok, bad])
    assert err.value.field == "temperature"
    bad2 = AITask(backend=b.name, prompt="x")
    bad2["top_k"] = 0
    async with Session([b]) as s:  # through a session: refused before anything is queued
        with pytest.raises(TaskValidationError, match="top_k") as err:
            await s.submit_tasks([AITask(backend=b.name, prompt="fine"), bad2])
        assert err.value.field == "top_k"
    assert bad2.state == "NEW" and bad2.future is None
    assert ok.state == "NEW" and not b.is_live(ok.uid)
    await asyncio.sleep(0.05)
    assert [r for r in seen_requests(fake_server) if r["path"] != "/v1/models"] == []


def test_constructor_validates_fields():
    with pytest.raises(SessionError, match="max_batch_size"):
        VllmInferenceBackend(endpoint="http://127.0.0.1:1/v1", max_batch_size=0)
    with pytest.raises(SessionError, match="max_batch_wait_ms"):
        VllmInferenceBackend(endpoint="http://127.0.0.1:1/v1", max_batch_wait_ms=-1)
    with pytest.raises(SessionError, match="endpoint"):
        VllmInferenceBackend(endpoint="127.0.0.1:8000")
    with pytest.raises(SessionError, match="model_name"):
        VllmInferenceBackend()
    with pytest.raises(SessionError, match="port"):
        VllmInferenceBackend(model_name="m", port=70000)
    b = DragonVllmInferenceBackend(endpoint="http://127.0.0.1:1/v1")
    assert b.name == "vllm" and isinstance(b, VllmInferenceBackend)
    assert b.task_kinds == frozenset({"ai"}) and b.capacity() >= 1


async def test_batches_released_by_size_or_wait(slow_fake_server):
    ep = slow_fake_server.endpoint
    # size: 8 tasks with max_batch_size=4 go out at once despite a 60 s wait
    b = VllmInferenceBackend(endpoint=ep, max_batch_size=4, max_batch_wait_ms=60_000)
    async with Session([b]) as s:
        ts = [AITask(backend=b.name, prompt=f"p{i}") for i in range(8)]
        t0 = time.monotonic()
        await s.submit_tasks(ts)
        await s.wait_tasks(ts, timeout=30)
        assert time.monotonic() - t0 < 20
        assert b.batches_sent == 2 and all(t.state == "DONE" for t in ts)
    # wait: 3 tasks in a batch of 100 wait ~0.5 s before anything is sent
    b = VllmInferenceBackend(endpoint=ep, max_batch_size=100, max_batch_wait_ms=500)
    async with Session([b]) as s:
        ts = [AITask(backend=b.name, prompt=f"q{i}") for i in range(3)]
        await s.submit_tasks(ts)
        await asyncio.sleep(0.3)
        assert all(t.state == "QUEUED" for t in ts) and b.batches_sent == 0
        await s.wait_tasks(ts, timeout=30)
        assert b.batches_sent == 1 and all(t.state == "DONE" for t in ts)


async def test_cancel_queued_task(fake_server):
    b = VllmInferenceBackend(endpoint=fake_server.endpoint, max_batch_wait_ms=300)
    async with Session([b]) as s:
        a, c = AITask(backend=b.name, prompt="keep"), AITask(backend=b.name, prompt="drop")
        await s.submit_tasks([a, c])
        assert await s.cancel_task(c) is True
        await s.wait_tasks([a, c], timeout=20)
    assert a.state == "DONE" and c.state == "CANCELED"
    assert all(r["body"].get("messages", [{}])[-1].get("content") != "drop"
               for r in seen_requests(fake_server))


async def test_unreachable_endpoint_fails_start_naming_it():
    ep = f"http://127.0.0.1:{free_port()}/v1"
    b = VllmInferenceBackend(endpoint=ep)
    with pytest.raises(BackendError, match=ep):
        await b
    assert await b.state() == "FAILED"


async def test_endpoint_lost_fails_pending_tasks_session_stays_usable(slow_fake_server):
    ep = slow_fake_server.endpoint
    b = VllmInferenceBackend(endpoint=ep, max_batch_wait_ms=5, request_timeout=30)
    cb = ConcurrentExecutionBackend(max_workers=2)
    async with Session([cb, b]) as s:
        ts = [AITask(backend=b.name, prompt=f"p{i}") for i in range(3)]
        await s.submit_tasks(ts)
        await asyncio.sleep(0.5)  # the requests are in flight (the server takes 3 s)
        slow_fake_server.kill()
        await s.wait_tasks(ts, timeout=20)
        for t in ts:
            assert t.state == "FAILED", t
            assert isinstance(t.exception, BackendError) and ep in str(t.exception)
        # the server is gone: fails fast, nothing restarts
        later = AITask(backend=b.name, prompt="again")
        await s.submit_tasks([later])
        await s.wait_tasks([later], timeout=20)
        assert later.state == "FAILED" and ep in str(later.exception)
        assert not slow_fake_server.is_alive()
        c = ComputeTask(function=double, args=(21,))
        await s.submit_tasks([c])
        assert (await c).return_value == 42


async def test_managed_server_dies_fails_tasks_restarts_nothing():
    port_cmd = [sys.executable, FAKE_SERVER, "--port", "{port}", "--delay", "5"]
    b = VllmInferenceBackend(server_command=port_cmd, port=0, max_batch_wait_ms=5,
                             startup_timeout=30)
    cb = ConcurrentExecutionBackend(max_workers=2)
    async with Session([cb, b]) as s:
        svc = b.service
        assert b.managed and svc.state == "READY" and b.endpoint.endswith("/v1")
        pid = svc.pid
        ts = [AITask(backend=b.name, prompt=f"p{i}") for i in range(4)]
        await s.submit_tasks(ts)
        await asyncio.sleep(0.5)
        svc.kill()
        await s.wait_tasks(ts, timeout=20)
        for t in ts:
            assert t.state == "FAILED"
            assert isinstance(t.exception, BackendError)
            assert b.endpoint in str(t.exception) and "exited" in str(t.exception)
        assert await b.state() == "FAILED"
        assert b.service is svc and svc.pid == pid and not svc.is_alive()
        with pytest.raises(BackendError, match="failed"):  # refused, not restarted
            await s.submit_tasks([AITask(prompt="more", backend=b.name)])
        c = ComputeTask(function=double, args=(4,))
        await s.submit_tasks([c])
        assert (await c).return_value == 8


async def test_server_that_exits_at_once_fails_start_with_log_lines():
    cmd = [sys.executable, "-c",
           "import sys; print('cannot load model xyz-42', flush=True); sys.exit(3)"]
    b = VllmInferenceBackend(server_command=cmd, port=0, startup_timeout=30)
    with pytest.raises(BackendError) as err:
        await b
    msg = str(err.value)
    assert "cannot load model xyz-42" in msg and "code 3" in msg


async def test_server_never_ready_times_out_and_is_stopped():
    cmd = [sys.executable, "-c",
           "import time; print('still loading weights', flush=True); time.sleep(60)"]
    b = VllmInferenceBackend(server_command=cmd, port=0, startup_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="still loading weights") as err:
        await b
    assert "not ready" in str(err.value) and time.monotonic() - t0 < 20
    assert not b.service.is_alive()


async def test_service_life_cycle(tmp_path):
    port = free_port()
    log = str(tmp_path / "svc.log")
    svc = Service("fake", [sys.executable, FAKE_SERVER, "--port", str(port)],
                  ready_url=f"http://127.0.0.1:{port}/v1/models",
                  endpoint=f"http://127.0.0.1:{port}/v1", log_file=log, poll_interval=0.05)
    exits = []
    svc.on_exit(lambda s: exits.append(s.returncode))
    await svc.start()
    assert svc.state == "READY" and svc.is_alive() and svc.endpoint.endswith("/v1")
    assert "fake OpenAI server" in svc.tail()
    await svc.stop()
    assert svc.state == "STOPPED" and not svc.is_alive()
    for _ in range(50):
        if exits:
            break
        await asyncio.sleep(0.02)
    assert exits
    with pytest.raises(BackendError, match="create a new Service"):
        await svc.start()


async def test_service_set_starts_and_stops_all():
    services = ServiceSet()
    port = free_port()
    svc = await services.start("db", [sys.executable, FAKE_SERVER, "--port", str(port)],
                               ready_url=f"http://127.0.0.1:{port}/v1/models",
                               poll_interval=0.05)
    assert "db" in services and services.get("db") is svc and svc.state == "READY"
    with pytest.raises(BackendError, match="already ready"):
        await services.start("db", [sys.executable, "-c", "pass"])
    with pytest.raises(BackendError, match="no service named"):
        services.get("nope")
    await services.stop_all()
    assert not svc.is_alive() and svc.state == "STOPPED"
