"""The seed documentation's examples, with `rhapsody` → `rhapsody_lab`, on the concurrent backend.

Each snippet is kept as close to the published text as running it here allows; examples
that name Dragon, Dask or vLLM are exercised in those backends' own tests.
"""

from __future__ import annotations

import asyncio

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import TaskExecutionError
from rhapsody_lab.backends import ConcurrentExecutionBackend


def compute_pi(n_samples):
    import random
    hits = sum(1 for _ in range(n_samples)
               if random.random()**2 + random.random()**2 < 1)
    return 4 * hits / n_samples


async def compute_function():
    import platform
    print(f"Running on host: {platform.node()}")


def make_tasks():
    return [ComputeTask(function=compute_pi, args=(10_000,)),
            ComputeTask(executable="/bin/sh", arguments=["-c", "exit 2"]),
            ComputeTask(executable="/bin/echo", arguments=["ok"])]


async def test_wait_modes_section(capsys):
    backend = await ConcurrentExecutionBackend()
    tasks = make_tasks()
    async with Session(backends=[backend]) as session:
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=30.0)

        for t in tasks:
            if t.state == "DONE":
                print(t.return_value or t.stdout)
            else:
                print(f"{t.uid} failed: {t.exception or t.stderr}")
    out = capsys.readouterr().out
    assert "failed with exit code 2" in out and "ok" in out

    tasks = make_tasks()
    async with Session(backends=[ConcurrentExecutionBackend()]) as session:
        futures = await session.submit_tasks(tasks)
        caught = None
        try:
            await asyncio.gather(*futures)
        except TaskExecutionError as e:          # command task (executable)
            caught = f"Command failed: {e}"
        except Exception as e:                   # function task raised
            caught = f"Function raised: {e}"
        results = await asyncio.gather(*futures, return_exceptions=True)
        lines = []
        for t, r in zip(tasks, results, strict=True):
            if isinstance(r, Exception):
                lines.append(f"{t.uid} → error: {r}")
            else:
                lines.append(f"{t.uid} → {t.return_value}")
    assert caught.startswith("Command failed") and "error" in lines[1]
    assert 2.5 < tasks[0].return_value < 3.8


async def test_await_future_and_task_section():
    task_a, task_b = ComputeTask(function=compute_pi, args=(1000,)), \
        ComputeTask(executable="/bin/echo", arguments=["b"])
    async with Session(backends=[ConcurrentExecutionBackend()]) as session:
        futures = await session.submit_tasks([task_a, task_b])

        result_a = await futures[0]   # raises if task_a failed
        result_b = await task_b       # task objects are awaitable too
    assert result_a is task_a and result_b is task_b and task_b.stdout == "b\n"


async def test_multiple_backends_section(capsys):
    be_local = ConcurrentExecutionBackend(name="local_cpu")
    be_remote = ConcurrentExecutionBackend(name="hpc_gpu")  # Dragon in the original
    await asyncio.gather(be_local, be_remote)

    async with Session(backends=[be_local, be_remote]) as session:
        task1 = ComputeTask(
            function=compute_function, backend=be_local.name)
        task2 = ComputeTask(
            function=compute_function, backend=be_remote.name)

        await session.submit_tasks([task1, task2])
        await asyncio.gather(task1, task2)

        print(f"Task 1 ran on: {task1.backend}")
        print(f"Task 2 ran on: {task2.backend}")
    out = capsys.readouterr().out
    assert out.count("Running on host:") == 2
    assert "Task 1 ran on: local_cpu" in out and "Task 2 ran on: hpc_gpu" in out


async def test_tutorial_statistics_section(capsys):
    def hello_rhapsody():
        import socket
        return f"Hello from {socket.gethostname()}!"

    backend = await ConcurrentExecutionBackend()
    session = Session(backends=[backend])
    tasks = [ComputeTask(function=hello_rhapsody) for _ in range(32)]
    async with session:
        futures = await session.submit_tasks(tasks)
        await asyncio.gather(*futures)
        stats = session.get_statistics()
        print("=== Session Statistics ===")
        print(f"Total tasks    : {stats['summary']['total_tasks']}")
        print(f"State counts   : {dict(stats['counts'])}")
        print(f"Avg total time : {stats['summary']['avg_total']:.4f}s")
        print(f"Avg queue time : {stats['summary']['avg_queue']:.4f}s")
        print(f"Avg exec time  : {stats['summary']['avg_execution']:.4f}s")
    out = capsys.readouterr().out
    assert "Total tasks    : 32" in out and "State counts   : {'DONE': 32}" in out
