"""Run under `dragon -s modes.py OUTDIR`: every execution mode, one JSON line per check."""

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import threading
import time

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import ResourceError, TaskValidationError
from rhapsody_lab.backends import DragonExecutionBackendV3

OUT = sys.argv[1]
HAVE_MPI = shutil.which("mpirun") is not None and importlib.util.find_spec("mpi4py") is not None
MPI_CODE = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "print(f'rank={c.Get_rank()} size={c.Get_size()} sum={c.allreduce(1)}')")


def report(check, **fields):
    print(json.dumps({"check": check, **fields}, default=repr), flush=True)


def square(x):
    return x * x


async def async_host(tag):
    import socket
    await asyncio.sleep(0)
    return f"[{tag}] {socket.gethostname()}"


def rank_info(scale=1):
    return {"rank": int(os.environ["RHAPSODY_RANK"]), "n": int(os.environ["RHAPSODY_NRANKS"]),
            "pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("MY_VAR"),
            "scale": scale}


def fail_on_rank1():
    if os.environ["RHAPSODY_RANK"] == "1":
        raise ValueError("rank one exploded")
    return "ok"


def boom(msg):
    raise KeyError(msg)


def crash():
    os._exit(7)


def nothing():
    return None


def nap_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def sometimes(i):
    """None for even i, i*i for odd, raises for i % 50 == 7: a chunk of mixed outcomes."""
    if i % 50 == 7:
        raise KeyError(i)
    return None if i % 2 == 0 else i * i


def sleeper(s):
    time.sleep(s)
    return "woke"


def pid_then_sleep(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(60)


def make_adder(n):
    return lambda x: x + n


def fields(t):
    return {k: t.get(k) for k in ("uid", "state", "return_value", "stdout", "stderr",
                                  "exit_code")} | {"exception": repr(t.get("exception"))}


async def main():
    backend = await DragonExecutionBackendV3(num_workers=2)
    report("started", seconds=backend.startup_seconds, capacity=backend.capacity(),
           have_mpi=HAVE_MPI)
    shm_before = _shm()
    await backend.submit_tasks([])  # an empty hand-over: nothing happens, nothing breaks
    async with Session(backends=[backend]) as s:
        tpl = {"cwd": OUT, "env": {"MY_VAR": "hello"}}
        tasks = {
            "native": ComputeTask(function=square, args=(7,)),
            "native_async": ComputeTask(function=async_host, args=("native",)),
            "fn_process": ComputeTask(function=rank_info, kwargs={"scale": 3},
                                      task_backend_specific_kwargs={"process_template": tpl}),
            "fn_job": ComputeTask(function=rank_info, task_backend_specific_kwargs={
                "process_templates": [(2, tpl), (1, {"env": {"MY_VAR": "other"}})]}),
            "exe_process": ComputeTask(executable="/bin/bash", arguments=[
                "-c", "echo cwd=$(pwd) var=$MY_VAR; echo to-err >&2"],
                task_backend_specific_kwargs={"process_template": tpl}),
            "exe_job": ComputeTask(executable="/bin/bash", arguments=[
                "-c", "echo rank=$RHAPSODY_RANK of $RHAPSODY_NRANKS"],
                task_backend_specific_kwargs={"process_templates": [(2, {}), (2, {})]}),
            "exe_default": ComputeTask(executable="hostname"),
            "exe_capture": ComputeTask(executable="/bin/bash", arguments=[
                "-c", "echo cap-out; echo cap-err >&2"], capture_stdio=True),
            "mpi_ranks": ComputeTask(executable=sys.executable, arguments=["-c", MPI_CODE],
                                     task_backend_specific_kwargs={"type": "mpi", "ranks": 3})
            if HAVE_MPI else
            ComputeTask(executable="/bin/bash", arguments=["-c", "echo rank=$RHAPSODY_RANK"],
                        task_backend_specific_kwargs={"type": "mpi", "ranks": 3}),
            "native_raises": ComputeTask(function=boom, args=("bad-key",)),
            "job_rank_fails": ComputeTask(function=fail_on_rank1, task_backend_specific_kwargs={
                "process_templates": [(2, {})]}),
            "process_crash": ComputeTask(function=crash,
                                         task_backend_specific_kwargs={"process_template": {}}),
            "exe_fails": ComputeTask(executable="/bin/bash", arguments=[
                "-c", "echo partial; echo oops >&2; exit 3"],
                task_backend_specific_kwargs={"process_templates": [(1, {}), (1, {})]}),
            "exe_missing": ComputeTask(executable="/no/such/binary",
                                       task_backend_specific_kwargs={"process_template": {}}),
            "exe_timeout": ComputeTask(executable="/bin/sleep", arguments=["30"],
                                       task_backend_specific_kwargs={
                                           "process_template": {}, "timeout": 1.0}),
            "fn_timeout": ComputeTask(function=sleeper, args=(30,),
                                      task_backend_specific_kwargs={"timeout": 1.5}),
        }
        t0 = time.time()
        futs = await s.submit_tasks(list(tasks.values()))
        report("submit_returned", seconds=time.time() - t0, n=len(futs))
        await s.wait_tasks(list(tasks.values()), timeout=120)
        for name, t in tasks.items():
            report(name, **fields(t))
        # a pool worker dies under a native task: only that task fails
        group = [ComputeTask(function=square, args=(i,)) for i in range(30)]
        group.insert(10, ComputeTask(function=crash))
        await s.submit_tasks(group)
        await s.wait_tasks(group, timeout=60)
        report("native_crash", crash=fields(group[10]),
               others=sorted({t.state for t in group if t is not group[10]}),
               values_ok=all(t.return_value == i * i for i, t in
                             enumerate(group[:10] + group[11:])))
        # a new worker takes the dead one's place: two tasks submitted one after the
        # other while the first sleeps run in two processes, neither the dead one
        workers = backend._workers_set
        for _ in range(100):  # the watcher looks every 0.3 s; a process starts in ~0.5 s
            if len(workers._pids) == 2:
                break
            await asyncio.sleep(0.1)
        first = ComputeTask(function=nap_pid, args=(1.5,))
        await s.submit_tasks([first])
        await asyncio.sleep(0.5)
        second = ComputeTask(function=nap_pid, args=(0.1,))
        await s.submit_tasks([second])
        await s.wait_tasks([first, second], timeout=60)
        report("respawn", dead_pid=int(group[10].stderr.split("process ")[1].split()[0]),
               pids=[first.return_value, second.return_value],
               states=[first.state, second.state])
        # chunks of one argument-less function (one shared pool item), recorded at once
        # when every value is None, one by one when not
        nulls = [ComputeTask(function=nothing) for _ in range(3000)]
        pids = [ComputeTask(function=os.getpid) for _ in range(500)]
        await s.submit_tasks(nulls + pids)
        await s.wait_tasks(nulls + pids, timeout=60)
        report("bulk", null_states=sorted({t.state for t in nulls}),
               null_values=sorted({repr(t.return_value) for t in nulls}),
               null_stdout=sorted({t.stdout for t in nulls}),
               null_codes=sorted({t.exit_code for t in nulls}),
               pid_states=sorted({t.state for t in pids}),
               pids_ok=all(isinstance(t.return_value, int) and t.stdout == str(t.return_value)
                           for t in pids),
               done_count=s.get_statistics()["counts"]["DONE"])
        # a chunk of mixed outcomes: each one reaches its own task
        mixed = [ComputeTask(function=sometimes, args=(i,)) for i in range(400)]
        await s.submit_tasks(mixed)
        await s.wait_tasks(mixed, timeout=60)
        report("mixed", wrong=[i for i, t in enumerate(mixed) if (
            (t.state, t.return_value) != ("FAILED", None) if i % 50 == 7 else
            (t.state, t.return_value) != ("DONE", None if i % 2 == 0 else i * i))],
            failed_key=[repr(t.exception) for t in mixed if t.state == "FAILED"][:1])
        # values and functions the standard pickle refuses
        lock = threading.Lock()

        def uses_lock():
            with lock:
                return 1
        odd = {"lambda_return": ComputeTask(function=make_adder, args=(1,)),
               "unpicklable_fn": ComputeTask(function=uses_lock)}
        # the tutorial's heterogeneous workload (2.3), functions nested in a coroutine
        async def nested():
            import socket
            return f"[nested] {socket.gethostname()}"
        tutorial = [
            ComputeTask(function=nested),
            ComputeTask(executable="/bin/bash", arguments=["-c", "echo [exec-single] $(hostname)"],
                        task_backend_specific_kwargs={"process_template": {}}),
            ComputeTask(executable="/bin/bash",
                        arguments=["-c", "echo [exec-parallel] $(hostname) PID:$$"],
                        task_backend_specific_kwargs={"process_templates": [(2, {}), (2, {})]}),
            ComputeTask(function=nested, task_backend_specific_kwargs={"process_template": {}}),
            ComputeTask(function=nested,
                        task_backend_specific_kwargs={"process_templates": [(2, {}), (2, {})]}),
        ]
        await s.submit_tasks([*odd.values(), *tutorial])
        await s.wait_tasks([*odd.values(), *tutorial], timeout=120)
        rv = odd["lambda_return"].return_value
        report("lambda_return", state=odd["lambda_return"].state,
               adds=rv(41) if callable(rv) else None)
        report("unpicklable_fn", **fields(odd["unpicklable_fn"]))
        report("tutorial", states=[t.state for t in tutorial],
               outputs=[t.return_value if t.function else t.stdout for t in tutorial])
        stats = s.get_statistics()
        report("statistics", counts=dict(stats["counts"]), total=stats["summary"]["total_tasks"])
        # tasks after failures still run: the session stays usable
        many = [ComputeTask(function=square, args=(i,)) for i in range(2000)]
        t0 = time.time()
        await s.submit_tasks(many)
        await s.wait_tasks(many, timeout=120)
        report("after_failures", seconds=time.time() - t0,
               ok=all(t.return_value == i * i for i, t in enumerate(many)),
               states=sorted({t.state for t in many}))
        # a task's state shows RUNNING while it runs (native function, process mode)
        seen = {}
        for mode, t in {"native": ComputeTask(function=sleeper, args=(3,)),
                        "process": ComputeTask(executable="/bin/sleep", arguments=["3"],
                                               task_backend_specific_kwargs={
                                                   "process_template": {}})}.items():
            await s.submit_tasks([t])
            for _ in range(100):
                if t.state == "RUNNING":
                    break
                await asyncio.sleep(0.05)
            seen[mode] = t.state
            await s.wait_tasks([t], timeout=60)
            seen[mode + "_end"] = t.state
        report("running_state", **seen)
        # bad input
        for name, kw in {
            "bad_host": {"process_template": {"policy": {"placement": "HOST_NAME",
                                                         "host_name": "nohost"}}},
            "bad_cpu": {"process_templates": [(1, {"policy": {"cpu_affinity": [999]}})]},
            "bad_gpu": {"process_template": {"policy": {"gpu_affinity": [0]}}},
            "bad_key": {"process_template": {"target": "/bin/true"}},
            "bad_n": {"process_templates": [(0, {})]},
        }.items():
            t = ComputeTask(executable="/bin/true", task_backend_specific_kwargs=kw)
            try:
                await s.submit_tasks([t])
                report(name, raised=None, state=t.state)
            except (ResourceError, TaskValidationError) as exc:
                report(name, raised=type(exc).__name__, message=str(exc), state=t.state)
        # cancel a running process task, then close with tasks still running
        long_proc = ComputeTask(executable="/bin/sleep", arguments=["60"],
                                task_backend_specific_kwargs={"process_template": {}})
        await s.submit_tasks([long_proc])
        await asyncio.sleep(1.0)
        canceled = await s.cancel_task(long_proc)
        await s.wait_tasks([long_proc], timeout=20)
        report("cancel_running", returned=canceled, state=long_proc.state)
        left = [ComputeTask(executable="/bin/sleep", arguments=["60"],
                            task_backend_specific_kwargs={"process_templates": [(2, {})]}),
                ComputeTask(function=pid_then_sleep, args=(os.path.join(OUT, "pids"),),
                            task_backend_specific_kwargs={"process_templates": [(2, {})]})]
        await s.submit_tasks(left)
        pid_file = os.path.join(OUT, "pids")
        for _ in range(200):  # until both function ranks run (python start-up under load)
            await asyncio.sleep(0.1)
            if os.path.exists(pid_file) and len(_read(pid_file).split()) >= 2:
                break
        await asyncio.sleep(0.3)
        pids = sorted(backend.seen_pids)
        with open(os.path.join(OUT, "pids")) as f:
            pids += [int(x) for x in f.read().split()]
        t0 = time.time()
    report("close", seconds=time.time() - t0, states=[t.state for t in left])
    time.sleep(0.5)
    alive = [p for p in pids if _alive(p)]
    sleeps = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p) == "/bin/sleep 60"]
    report("leftover_pids", pids=len(pids), alive=alive, sleeps=sleeps,
           new_shm=sorted(_shm() - shm_before))


def _read(path):
    with open(path) as f:
        return f.read()


def _shm():
    return {n for n in os.listdir("/dev/shm") if not n.startswith(("sem.", "psm_", "wnsm_"))}


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmd(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


if __name__ == "__main__":
    asyncio.run(main())
