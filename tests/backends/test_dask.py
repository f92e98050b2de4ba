"""DaskExecutionBackend against real Dask clusters: LocalCluster, a scheduler process, Slurm."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import (
    BackendError,
    ResourceError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody_lab.backends import DaskExecutionBackend


# -- task functions (module level: workers import them) --------------------------------
def square(n):
    return n * n


async def double_later(n):
    await asyncio.sleep(0.01)
    return n * 2


def boom():
    raise ValueError("boom from a worker")


def current_key():
    from distributed import get_worker
    return get_worker().get_current_task()


def write_for(path, seconds):
    """Append a line to ``path`` every 50 ms for ``seconds``; the number of lines."""
    end = time.time() + seconds
    n = 0
    with open(path, "a") as f:
        while time.time() < end:
            f.write(f"{n}\n")
            f.flush()
            n += 1
            time.sleep(0.05)
    return n


def nap(seconds):
    time.sleep(seconds)
    return seconds


def pid_then_sleep(pidfile, marker):
    """First run: record the pid and hang (the test kills this worker); rerun: return."""
    if os.path.exists(marker):
        return "rerun"
    with open(marker, "w"):
        pass
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return "first"


def slurm_job_id():
    return os.environ.get("SLURM_JOB_ID")


def detect_allocation():
    from rhapsody_lab.resources import Allocation
    return Allocation.detect().source


def _main_function():
    """A function defined in ``__main__`` (as in a script or a notebook)."""
    ns = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", ns)
    return ns["triple"]


def _child_pids() -> set[int]:
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"resource_tracker" in f.read():
                            continue  # multiprocessing's interpreter-wide helper
                except OSError:
                    continue
                out.add(int(pid))
    return out


@pytest.fixture
def no_new_children():
    """Assert a test leaves no new child process behind (shared clusters may have some)."""
    before = _child_pids()
    yield
    deadline = time.monotonic() + 10
    while (left := _child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"child processes left behind: {left}"


@pytest.fixture(scope="module", autouse=True)
def _no_resource_tracker_left():
    """Worker processes start multiprocessing's resource tracker; later test modules
    check for leftover children, so end it if this module started it."""
    from rhapsody_lab.backends.dask import _resource_tracker_running, _stop_resource_tracker
    running = _resource_tracker_running()
    yield
    if not running:
        _stop_resource_tracker()


@pytest.fixture(scope="module")
def cluster():
    """A shared LocalCluster: 2 worker processes with 1 thread each."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as c:
        yield c


def _read(path) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


async def _wait_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not _read(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)
    return _read(path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the default LocalCluster ------------------------------------------------------------
async def test_default_local_cluster_runs_every_kind_of_task(no_children):
    backend = DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1})
    async with Session(backends=[backend]) as session:
        assert await backend.state() == "RUNNING"
        assert backend.capacity() == 2
        triple = _main_function()
        tasks = [
            ComputeTask(function=square, args=(7,)),
            ComputeTask(function=double_later, args=(4,)),
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo err >&2"]),
            ComputeTask(function=boom),
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo nope >&2; exit 3"]),
            ComputeTask(function=triple, args=(5,)),
            ComputeTask(function=current_key),
        ]
        futures = await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
        sq, dl, ex, bad, bad_ex, tr, key = tasks
        assert (sq.state, sq.return_value, sq.stdout, sq.exit_code) == ("DONE", 49, "49", 0)
        assert (dl.state, dl.return_value) == ("DONE", 8)
        assert (ex.state, ex.stdout, ex.stderr, ex.exit_code) == ("DONE", "out\n", "err\n", 0)
        assert bad.state == "FAILED" and isinstance(bad.exception, ValueError)
        assert "boom from a worker" in bad.stderr and "Traceback" in bad.stderr
        assert bad.exit_code == 1
        with pytest.raises(ValueError, match="boom from a worker"):
            await futures[3]
        assert (bad_ex.state, bad_ex.exit_code, bad_ex.stderr) == ("FAILED", 3, "nope\n")
        with pytest.raises(TaskExecutionError):
            await bad_ex
        assert (tr.state, tr.return_value) == ("DONE", 15)
        # keys: common prefix + '-' separators (never the dotted uid: one TaskGroup each)
        assert re.fullmatch(r"current_key-[0-9a-f]{8}-\d+", key.return_value), key.return_value
        from dask.utils import key_split
        assert key_split(key.return_value) == "current_key"
        stats = session.get_statistics()
        assert stats["counts"]["DONE"] == 5 and stats["counts"]["FAILED"] == 2
        assert stats["summary"]["avg_execution"] > 0  # RUNNING carried the worker's start
    assert await backend.state() == "SHUTDOWN"


async def test_submit_returns_before_tasks_run(cluster):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        tasks = [ComputeTask(function=nap, args=(0.2,)) for _ in range(6)]
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        assert time.perf_counter() - t0 < 0.2
        assert all(t.state == "QUEUED" for t in tasks)
        await session.wait_tasks(tasks, timeout=30)
        assert [t.state for t in tasks] == ["DONE"] * 6
        slots = {t.backend for t in tasks}
        assert slots == {"dask"}


async def test_long_task_is_running_before_it_ends(cluster):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        events = []
        session.subscribe(events.extend, inline=True)
        t = ComputeTask(function=nap, args=(3,))
        await session.submit_tasks([t])
        deadline = time.monotonic() + 2.5
        while t.state != "RUNNING":
            assert time.monotonic() < deadline, f"still {t.state}"
            await asyncio.sleep(0.05)
        await t
        session.events.flush(limit=None)
        assert [e[2] for e in events if e[1] == t.uid] == ["SUBMITTED", "QUEUED", "RUNNING",
                                                         "DONE"]


async def test_bulk_submission_many_tasks(cluster):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(500)]
        events = []
        session.subscribe(events.extend, inline=True)
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
        assert [t.return_value for t in tasks] == [i * i for i in range(500)]
        session.events.flush(limit=None)
        running = [e for e in events if e[2] == "RUNNING"]
        assert len(running) == 500
        assert {e[4] for e in running} <= set(cluster.scheduler_info["workers"])


# -- injection ---------------------------------------------------------------------------
async def test_injected_cluster_and_client_are_left_running(cluster):
    backend = DaskExecutionBackend(cluster=cluster)
    async with backend:
        assert backend.capacity() == 2
        async with Session(backends=[backend]) as session:
            t = ComputeTask(function=square, args=(3,))
            await session.submit_tasks([t])
            assert (await t).return_value == 9
    assert cluster.status.name == "running"

    with Client(cluster) as client:
        async with Session(backends=[DaskExecutionBackend(client=client)]) as session:
            t = ComputeTask(executable="/bin/echo", arguments=["via", "client"])
            await session.submit_tasks([t])
            await t
            assert t.stdout == "via client\n"
        assert client.status == "running"

    # an asynchronous client and a bare address both work too
    aclient = await Client(cluster.scheduler_address, asynchronous=True)
    try:
        for b in (DaskExecutionBackend(client=aclient, name="a"),
                  DaskExecutionBackend(cluster=cluster.scheduler_address, name="b")):
            async with Session(backends=[b]) as session:
                t = ComputeTask(function=double_later, args=(21,))
                await session.submit_tasks([t])
                assert (await t).return_value == 42
        assert aclient.status == "running"
    finally:
        await aclient.close()


def test_constructor_validates_resources():
    with pytest.raises(SessionError, match=r"n_workers.*integer >= 1"):
        DaskExecutionBackend(resources={"n_workers": 0})
    with pytest.raises(SessionError, match=r"'workers'.*n_workers"):
        DaskExecutionBackend(resources={"workers": 4})
    with pytest.raises(SessionError, match="processes"):
        DaskExecutionBackend(resources={"processes": "yes"})
    with pytest.raises(SessionError, match="resources must be a dict"):
        DaskExecutionBackend(resources=[4])
    with pytest.raises(SessionError, match="either cluster= or client="):
        DaskExecutionBackend(cluster="tcp://x:1", client="tcp://x:1")
    with pytest.raises(SessionError, match="cluster must be"):
        DaskExecutionBackend(cluster=42)
    with pytest.raises(SessionError, match="LocalCluster only"):
        DaskExecutionBackend(resources={"n_workers": 2}, cluster="tcp://x:1")


async def test_unreachable_scheduler_fails_start_with_backend_error():
    backend = DaskExecutionBackend(client="tcp://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="could not start"):
        await backend
    assert time.monotonic() - t0 < 30


# -- per-task resources ----------------------------------------------------------------------
async def test_per_task_dask_resources():
    backend = DaskExecutionBackend(resources={"n_workers": 1, "processes": False,
                                              "resources": {"GPU": 1}})
    async with Session(backends=[backend]) as session:
        gpu = [ComputeTask(function=nap, args=(0.3,),
                           task_backend_specific_kwargs={"resources": {"GPU": 1}})
               for _ in range(2)]
        exe = ComputeTask(executable="/bin/echo", arguments=["g"],
                          task_backend_specific_kwargs={"resources": {"GPU": 1}})
        events = []
        session.subscribe(events.extend, inline=True)
        await session.submit_tasks([*gpu, exe])
        await session.wait_tasks([*gpu, exe], timeout=30)
        assert [t.state for t in [*gpu, exe]] == ["DONE"] * 3
        session.events.flush(limit=None)
        # GPU=1 per task on a 1-GPU worker: the two naps never overlap
        span = {e[1]: e[0] for e in events if e[2] in ("RUNNING",)}
        end = {e[1]: e[0] for e in events if e[2] == "DONE"}
        a, b = sorted(gpu, key=lambda t: span[t.uid])
        assert span[b.uid] >= end[a.uid] - 0.05
        # what no worker of the LocalCluster offers FAILS (RHAPSODY's way), naming the
        # field and the request; the other tasks of the same call run
        tpu = [ComputeTask(function=square, args=(1,),
                           task_backend_specific_kwargs={"resources": {"TPU": 1}}),
               ComputeTask(executable="/bin/echo", arguments=["t"],
                           task_backend_specific_kwargs={"resources": {"GPU": 2}})]
        fine = ComputeTask(function=square, args=(3,),
                           task_backend_specific_kwargs={"resources": {"GPU": 1}})
        await session.submit_tasks([tpu[0], fine, tpu[1]])
        await session.wait_tasks([*tpu, fine], timeout=30)
        assert fine.state == "DONE" and fine.return_value == 9
        for task, want in zip(tpu, ("{'TPU': 1}", "{'GPU': 2}"), strict=True):
            assert task.state == "FAILED" and task.exit_code == 1 and task.stdout == ""
            assert isinstance(task.exception, ResourceError)
            assert "task_backend_specific_kwargs.resources" in str(task.exception)
            assert want in task.stderr and want in str(task.exception)
        with pytest.raises(ResourceError, match="TPU"):
            await tpu[0]
        with pytest.raises(TaskValidationError, match="resources"):
            await session.submit_tasks([ComputeTask(
                function=square, args=(1,),
                task_backend_specific_kwargs={"resources": {"GPU": -1}})])


# -- cancellation ------------------------------------------------------------------------------
async def test_cancel_queued_function_and_running_executable(cluster, tmp_path):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        pidfile = tmp_path / "pid"
        exe = ComputeTask(executable="/bin/sh",
                          arguments=["-c", f"echo $$ > {pidfile}; exec sleep 60"])
        blocker = ComputeTask(function=nap, args=(1,))
        queued = [ComputeTask(function=nap, args=(3,)) for _ in range(3)]
        await session.submit_tasks([exe, blocker, *queued])
        pid = int(await _wait_file(pidfile))
        assert _alive(pid)
        for t in queued:
            assert await session.cancel_task(t) is True
            assert t.state == "CANCELED"
        assert await session.cancel_task(exe) is True
        assert exe.state == "CANCELED"
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "the executable's process survived cancel"
            await asyncio.sleep(0.1)
        assert await session.cancel_task(exe) is False  # already final
        await session.wait_tasks([blocker], timeout=30)
        assert blocker.state == "DONE"
        assert {t.state for t in queued} == {"CANCELED"}


async def test_cancel_of_a_running_function_is_refused_and_it_completes(cluster, tmp_path):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        path = tmp_path / "lines"
        writer = ComputeTask(function=write_for, args=(str(path), 3.0))
        await session.submit_tasks([writer])
        await _wait_file(path)  # it runs
        assert await session.cancel_task(writer) is False
        assert writer.state == "RUNNING"  # told by the worker that runs it
        grown = len(_read(path).split())
        await asyncio.sleep(0.5)
        assert len(_read(path).split()) > grown  # never said CANCELED while it goes on
        await session.wait_tasks([writer], timeout=30)
        assert writer.state == "DONE" and writer.return_value == len(_read(path).split())


async def test_a_canceled_queued_function_never_runs(cluster, tmp_path):
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        busy = [ComputeTask(function=write_for, args=(str(tmp_path / f"busy{i}"), 1.5))
                for i in range(2)]  # both workers' one thread each
        await session.submit_tasks(busy)
        for i in range(2):
            await _wait_file(tmp_path / f"busy{i}")
        queued = ComputeTask(function=write_for, args=(str(tmp_path / "queued"), 0.2))
        await session.submit_tasks([queued])
        await asyncio.sleep(0.2)  # on the scheduler or queued on a worker by now
        assert await session.cancel_task(queued) is True
        assert queued.state == "CANCELED"
        await session.wait_tasks(busy, timeout=30)
        after = ComputeTask(function=nap, args=(0.01,))  # the workers are free again
        await session.submit_tasks([after])
        await session.wait_tasks([after], timeout=30)
        await asyncio.sleep(0.5)
        assert not (tmp_path / "queued").exists() and queued.state == "CANCELED"


async def test_cancel_says_true_exactly_for_tasks_that_never_ran(cluster, tmp_path):
    """Cancels racing starts: True <=> CANCELED and never ran; False <=> it ran, DONE."""
    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        tasks = [ComputeTask(function=write_for, args=(str(tmp_path / f"t{i}"), 0.02))
                 for i in range(40)]
        await session.submit_tasks(tasks)
        answers = []
        for t in tasks:
            answers.append(await session.cancel_task(t))
            await asyncio.sleep(0.005)
        await session.wait_tasks(tasks, timeout=60)
        await asyncio.sleep(0.5)
        for i, (t, said) in enumerate(zip(tasks, answers, strict=True)):
            ran = (tmp_path / f"t{i}").exists()
            assert (said, t.state, ran) in ((True, "CANCELED", False), (False, "DONE", True)), i


async def test_close_cancels_running_tasks_and_kills_processes(no_new_children, tmp_path):
    backend = DaskExecutionBackend(resources={"n_workers": 1, "processes": False})
    session = Session(backends=[backend])
    pidfile = tmp_path / "pid"
    exe = ComputeTask(executable="/bin/sh", arguments=["-c", f"echo $$ > {pidfile}; sleep 60"])
    await session.submit_tasks([exe])
    pid = int(await _wait_file(pidfile))
    await session.close()
    assert exe.state == "CANCELED"
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


# -- faults -----------------------------------------------------------------------------------
async def test_unpicklable_function_fails_only_that_task(cluster):
    lock = threading.Lock()

    def holds_lock():
        with lock:
            return 1

    async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
        tasks = [ComputeTask(function=holds_lock), ComputeTask(function=square, args=(2,)),
                 ComputeTask(function=square, args=(lock,))]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=30)
        bad, good, bad_args = tasks
        assert good.state == "DONE" and good.return_value == 4
        assert bad.state == "FAILED" and isinstance(bad.exception, TaskValidationError)
        assert "holds_lock cannot be pickled" in str(bad.exception)
        assert "_thread.lock" in bad.stderr
        assert bad_args.state == "FAILED" and "arguments cannot be pickled" in bad_args.stderr


def die():
    os._exit(13)


async def test_killed_worker_reruns_only_its_task(no_new_children, tmp_path):
    """Dask reruns the tasks of a dead worker elsewhere; other tasks are untouched; a task
    that keeps killing its worker fails alone (KilledWorker) after allowed-failures."""
    import dask
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster:
        async with Session(backends=[DaskExecutionBackend(cluster=cluster)]) as session:
            victim = ComputeTask(function=pid_then_sleep,
                                 args=(str(tmp_path / "pid"), str(tmp_path / "marker")))
            others = [ComputeTask(function=nap, args=(0.2,)) for _ in range(5)]
            await session.submit_tasks([victim, *others])
            pid = int(await _wait_file(tmp_path / "pid"))
            os.kill(pid, signal.SIGKILL)
            await session.wait_tasks([victim, *others], timeout=60)
            assert victim.state == "DONE" and victim.return_value == "rerun"
            assert [t.state for t in others] == ["DONE"] * 5

            # (tasks queued on the same worker count as its tasks too, so this one is alone)
            killer = ComputeTask(function=die)
            await session.submit_tasks([killer])
            await session.wait_tasks([killer], timeout=90)
            assert killer.state == "FAILED"
            assert type(killer.exception).__name__ == "KilledWorker", killer.exception
            more = [ComputeTask(function=nap, args=(0.1,)) for _ in range(4)]
            await session.submit_tasks(more)
            await session.wait_tasks(more, timeout=60)
            assert [t.state for t in more] == ["DONE"] * 4


async def test_lost_scheduler_fails_tasks_and_next_call(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    py = sys.executable
    sched = subprocess.Popen([py, "-m", "distributed.cli.dask_scheduler", "--host",
                              "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                              "--scheduler-file", str(sched_file)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not sched_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        import json
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen([py, "-m", "distributed.cli.dask_worker", address,
                                   "--nthreads", "1", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        backend = DaskExecutionBackend(client=address)
        session = Session(backends=[backend])
        t = ComputeTask(function=nap, args=(30,))
        await session.submit_tasks([t])
        await asyncio.sleep(1.0)
        sched.kill()
        sched.wait()
        await session.wait_tasks([t], timeout=15)
        assert t.state == "FAILED" and isinstance(t.exception, BackendError)
        assert "lost the Dask scheduler" in str(t.exception)
        assert await backend.state() == "FAILED"
        t0 = time.monotonic()
        with pytest.raises(BackendError):
            await session.submit_tasks([ComputeTask(function=square, args=(1,))])
        assert time.monotonic() - t0 < 5
        t0 = time.monotonic()
        await asyncio.wait_for(session.close(), 30)
    finally:
        for p in (worker, sched):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


# -- Slurm ------------------------------------------------------------------------------------
def _slurm_skip() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not installed (run .ci/setup.d/20-slurm.sh)"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm not answering: {exc}"
    if "up" not in out.stdout:
        return f"Slurm not answering: {out.stderr.strip()}"
    return None


@pytest.mark.skipif(_slurm_skip() is not None, reason=str(_slurm_skip()))
async def test_slurm_cluster_runs_tasks_inside_jobs(tmp_path):
    from dask_jobqueue import SLURMCluster

    def make():
        c = SLURMCluster(cores=1, processes=1, memory="1GiB", walltime="00:10:00",
                         python=sys.executable, log_directory=str(tmp_path),
                         scheduler_options={"dashboard_address": ":0"})
        c.scale(jobs=2)
        return c

    cluster = await asyncio.to_thread(make)
    try:
        backend = DaskExecutionBackend(cluster=cluster)
        async with Session(backends=[backend]) as session:
            tasks = [ComputeTask(function=slurm_job_id) for _ in range(6)]
            tasks += [ComputeTask(executable="/bin/sh", arguments=["-c", "echo $SLURM_JOB_ID"]),
                      ComputeTask(function=detect_allocation)]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=90)
            assert [t.state for t in tasks] == ["DONE"] * len(tasks)
            jobs = {t.return_value for t in tasks[:6]}
            assert jobs and all(j and j.isdigit() for j in jobs)
            assert tasks[6].stdout.strip().isdigit()
            assert tasks[7].return_value == "slurm"
            deadline = time.monotonic() + 10
            while backend.capacity() != 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert backend.capacity() == 2
    finally:
        await asyncio.to_thread(cluster.close)


async def test_capture_stdio_and_str_results_on_workers(cluster, tmp_path):
    """capture_stdio: the worker writes <work_dir>/<uid>.stdout/.stderr; functions give str
    stdout/stderr once DONE or FAILED (RHAPSODY's result contract)."""
    exe = ComputeTask(executable="/bin/sh", arguments=["-c", "echo hi; echo oops >&2"],
                      capture_stdio=True)
    fn = ComputeTask(function=abs, args=(-3,))
    bad = ComputeTask(function=int, args=("x",))
    async with Session([DaskExecutionBackend(cluster=cluster)], work_dir=tmp_path) as s:
        await s.submit_tasks([exe, fn, bad])
        await s.wait_tasks([exe, fn, bad], timeout=60)
    assert exe.state == "DONE", exe.stderr
    assert exe.stdout == str(tmp_path / f"{exe.uid}.stdout")
    assert _read(exe.stdout) == "hi" and _read(exe.stderr) == "oops"
    assert (fn.state, fn.stdout, fn.stderr) == ("DONE", "3", "")
    assert bad.state == "FAILED" and bad.stdout == "" and "ValueError" in bad.stderr


async def test_local_cluster_leaves_the_kernel_environment_as_it_was(monkeypatch):
    """Dask's nannies set OMP_NUM_THREADS=1 (pre-spawn-environ) in the parent; later children
    of the kernel (a Flux job, an executable task) must not inherit that."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    async with Session([backend]) as session:
        task = ComputeTask(executable="sh", arguments=["-c", "echo ${OMP_NUM_THREADS:-unset}"])
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=60)
        assert "OMP_NUM_THREADS" not in os.environ
        assert os.environ["MKL_NUM_THREADS"] == "3"
        assert task.state == "DONE", task.stderr
        # the worker itself keeps Dask's setting; our executable runs in the worker
        assert task.stdout.strip() == "1"
