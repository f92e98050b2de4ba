"""Run under `dragon -s dragon_service_checks.py OUTDIR [vllm]`: services placed by Dragon.

One JSON line per check (a Dragon launch costs seconds, so every check shares one runtime).
With ``vllm`` as second argument it runs only the real vLLM server check.
"""

import asyncio
import json
import os
import sys
import time
import urllib.request

from rhapsody_lab.api import AITask, Session
from rhapsody_lab.api.errors import BackendError
from rhapsody_lab.backends import DragonVllmInferenceBackend
from rhapsody_lab.backends._dragon_launch import kill_tagged_here, runtime_nodes
from rhapsody_lab.services import Service, free_port

OUT = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_openai_server.py")


def report(check, **fields):
    print(json.dumps({"check": check, **fields}, default=repr), flush=True)


def dragon_alive(puid):
    """Ask the runtime itself (global services) whether process ``puid`` is alive."""
    from dragon.native.process import Process
    try:
        return bool(Process(None, ident=puid).is_alive)
    except Exception:
        return False


def ask(endpoint, prompt, model="fake-model"):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]})
    req = urllib.request.Request(f"{endpoint}/chat/completions", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


async def wait_for(pred, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not pred() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return pred()


def fake_service(name, port, **kw):
    # the shell leaves a child behind (as vLLM's engine core would): stop() must end it too
    cmd = ["/bin/sh", "-c", 'sleep 300 & exec "$@"', "sh",
           sys.executable, FAKE, "--port", str(port)]
    return Service(name, cmd, ready_url=f"http://{{host}}:{port}/v1/models",
                   endpoint=f"http://{{host}}:{port}/v1", startup_timeout=30,
                   poll_interval=0.05, stop_timeout=3,
                   log_file=os.path.join(OUT, f"{name}.log"), **kw)


async def services():
    nodes = [n.hostname for n in runtime_nodes()]
    report("nodes", nodes=nodes)

    # placed by the runtime: ready, serves, a Dragon process; stop() leaves nothing
    port = free_port()
    svc = fake_service("fake", port)
    exits = []
    svc.on_exit(lambda s: exits.append(s.returncode))
    await svc.start()
    tagged = kill_tagged_here(svc._token, 0)  # signal 0: who carries the service's token
    report("placed", placement=svc.placement, host=svc.host, endpoint=svc.endpoint,
           ready_url=svc.ready_url, puid=svc.puid, pid=svc.pid, state=svc.state,
           alive=svc.is_alive(), dragon_alive=dragon_alive(svc.puid), tagged=len(tagged),
           answer=ask(svc.endpoint, "what is 2+2?"), tail=svc.tail(), repr=repr(svc))
    await svc.stop()
    await wait_for(lambda: bool(exits))
    report("stopped", state=svc.state, alive=svc.is_alive(), dragon_alive=dragon_alive(
        svc.puid), returncode=svc.returncode, exits=exits,
        tagged_left=kill_tagged_here(svc._token, 0))

    # pinned to a node; its process killed behind its back: on_exit, FAILED, no restart
    port = free_port()
    pinned = fake_service("pinned", port, host=nodes[0])
    died = []
    pinned.on_exit(lambda s: died.append((s.state, s.returncode)))
    await pinned.start()
    report("pinned", placement=pinned.placement, host=pinned.host, endpoint=pinned.endpoint,
           answer=ask(pinned.endpoint, "2+2"))
    from dragon.native.process import Process
    Process(None, ident=pinned.puid).kill()  # not through the Service
    await wait_for(lambda: bool(died))
    await wait_for(lambda: not kill_tagged_here(pinned._token, 0))
    report("killed", exits=died, state=pinned.state, alive=pinned.is_alive(),
           tagged_left=kill_tagged_here(pinned._token, 0))
    await pinned.stop()

    # a node that is not in the runtime
    bad = Service("nowhere", [sys.executable, FAKE, "--port", "1"], host="no-such-node-42")
    try:
        await bad.start()
        report("bad_host", raised=None)
    except Exception as exc:
        report("bad_host", raised=type(exc).__name__, message=str(exc), state=bad.state)

    # a service that exits before it is ready
    early = Service("early", [sys.executable, "-c", "import sys; print('cannot load model "
                              "xyz-42', flush=True); sys.exit(3)"],
                    ready_url="http://{host}:9/v1/models", startup_timeout=30,
                    poll_interval=0.05, log_file=os.path.join(OUT, "early.log"))
    try:
        await early.start()
        report("early_exit", raised=None)
    except BackendError as exc:
        report("early_exit", raised=type(exc).__name__, message=str(exc), state=early.state,
               placement=early.placement)

    # placement="local" under Dragon stays a local child process
    port = free_port()
    local = Service("local", [sys.executable, FAKE, "--port", str(port)],
                    ready_url=f"http://{{host}}:{port}/v1/models", placement="local",
                    poll_interval=0.05, stop_timeout=3)
    await local.start()
    report("local", placement=local.placement, pid=local.pid, puid=local.puid,
           ready_url=local.ready_url)
    await local.stop()

    # the inference backend: its managed server is a Dragon process
    b = DragonVllmInferenceBackend(
        server_command=[sys.executable, FAKE, "--port", "{port}", "--model", "fake-model"],
        model_name="fake-model", port=0, max_batch_wait_ms=5, startup_timeout=30)
    async with Session([b]) as s:
        ts = [AITask(backend=b.name, prompt="What is 2+2?"),
              AITask(backend=b.name, prompt=["a", "b 2+2"]),
              AITask(backend=b.name, prompt="hello", max_tokens=8)]
        await s.submit_tasks(ts)
        await s.wait_tasks(ts, timeout=30)
        bsvc = b.service
        # a service of the session itself (not an inference special case), pinned
        port = free_port()
        ssvc = await s.start_service(
            "echo", [sys.executable, FAKE, "--port", str(port)], host=nodes[0],
            ready_url=f"http://{{host}}:{port}/v1/models", endpoint=f"http://{{host}}:{port}/v1",
            poll_interval=0.05, stop_timeout=3)
        report("session_service", placement=ssvc.placement, endpoint=s.get_service(
            "echo").endpoint, answer=ask(ssvc.endpoint, "2+2"), log=ssvc.log_file)
        report("vllm_backend", placement=bsvc.placement, endpoint=b.endpoint, host=bsvc.host,
               puid=bsvc.puid, dragon_alive=dragon_alive(bsvc.puid),
               states=[t.state for t in ts], responses=[t.response for t in ts],
               backends=[t.backend for t in ts])
    report("session_service_closed", state=ssvc.state, alive=ssvc.is_alive(),
           tagged_left=kill_tagged_here(ssvc._token, 0))
    report("vllm_backend_closed", state=bsvc.state, alive=bsvc.is_alive(),
           dragon_alive=dragon_alive(bsvc.puid), tagged_left=kill_tagged_here(bsvc._token, 0))

    # not stopped by the script: the interpreter's exit must still end it
    port = free_port()
    orphan = fake_service("orphan", port)
    await orphan.start()
    report("orphan_started", puid=orphan.puid, alive=orphan.is_alive())
    report("done")


async def real_vllm():
    from rhapsody_lab.backends.inference.vllm import default_vllm_python, vllm_home
    model = os.environ.get("RHAPSODY_VLLM_MODEL") or os.path.join(
        vllm_home(), "models", "smollm2-135m-hf")
    b = DragonVllmInferenceBackend(model_name=model, python=default_vllm_python(), port=0,
                                   max_batch_wait_ms=20, startup_timeout=120,
                                   log_file=os.path.join(OUT, "vllm.log"))
    t0 = time.monotonic()
    async with Session([b]) as s:
        ready = time.monotonic() - t0
        t = AITask(backend=b.name, prompt="What is 2+2? Answer with just the number.",
                   temperature=0.0, max_tokens=16)
        await s.submit_tasks([t])
        await s.wait_tasks([t], timeout=60)
        svc = b.service
        report("real_vllm", placement=svc.placement, endpoint=b.endpoint, state=t.state,
               response=t.response, stderr=t.stderr, ready_seconds=round(ready, 1),
               dragon_alive=dragon_alive(svc.puid))
    report("real_vllm_closed", alive=svc.is_alive(), tagged_left=kill_tagged_here(
        svc._token, 0))
    report("done")


if __name__ == "__main__":
    if sys.argv[2:] == ["vllm"]:
        asyncio.run(real_vllm())
    else:
        asyncio.run(services())
