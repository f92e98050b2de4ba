"""How the Dragon backend's feeder packs native tasks into chunks (no runtime needed).

The feeder hands chunks to ``ChunkWorkers.submit``; a recorder stands in for the worker
processes here (beside the real runs in ``test_dragon.py``), so the packing rules can be
checked exactly: tiny tasks go as one chunk per worker of the backlog, long tasks in
chunks of about ``_CHUNK_SECONDS`` of work.
"""

from __future__ import annotations

import threading

import pytest

from rhapsody_lab.api import ComputeTask
from rhapsody_lab.api.backend import DONE_RUN
from rhapsody_lab.backends import DragonExecutionBackendV3
from rhapsody_lab.backends import _dragon_native as native


def noop() -> None:
    return None


class _Recorder:
    """Takes chunks as ``ChunkWorkers.submit`` would, remembering their sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def submit(self, cid: int, token: str, blobs: dict, items: list) -> None:
        self.sizes.append(len(items))


def _chunk_sizes(n_tasks: int, workers: int, task_seconds: float,
                 handoffs: int = 1) -> list[int]:
    backend = DragonExecutionBackendV3(num_workers=workers)
    backend._inflight = threading.Semaphore(10_000)
    backend._workers_set = recorder = _Recorder()
    backend._task_seconds = task_seconds
    tasks = [ComputeTask(function=noop) for _ in range(n_tasks)]
    step = -(-n_tasks // handoffs)
    for i in range(0, n_tasks, step):  # queued before the feeder looks: one backlog
        backend._native_q.put(tasks[i:i + step])
    backend._native_q.put(None)
    backend._feed()  # returns once the queue's None is reached and nothing is pending
    assert sum(recorder.sizes) == n_tasks  # nothing lost, nothing twice
    return recorder.sizes


@pytest.mark.parametrize(("n", "workers", "expected"), [
    (5000, 2, [2500, 2500]),
    (5000, 4, [1250] * 4),
    (1000, 2, [1000]),  # under one chunk's worth: one message
    (3000, 3, [1024, 1024, 952]),  # a share under _CHUNK: chunks of _CHUNK
])
def test_tiny_tasks_go_as_one_chunk_per_worker(n: int, workers: int, expected: list) -> None:
    assert _chunk_sizes(n, workers, task_seconds=1e-6) == expected


def test_a_backlog_handed_over_in_pieces_is_split_as_a_whole() -> None:
    assert _chunk_sizes(6000, 2, task_seconds=1e-6, handoffs=3) == [3000, 3000]


def test_tiny_chunks_stay_under_the_cap() -> None:
    sizes = _chunk_sizes(40_000, 2, task_seconds=1e-6)
    assert max(sizes) <= native._CHUNK_MAX
    assert len(sizes) == 3  # 16384 + 16384 + 7232


def test_long_tasks_go_in_chunks_of_about_chunk_seconds_of_work() -> None:
    # 10 ms a task: 5 tasks make _CHUNK_SECONDS (0.05 s), so the workers stay balanced
    assert _chunk_sizes(20, 2, task_seconds=0.01) == [5, 5, 5, 5]


@pytest.mark.parametrize("with_futures", [True, False])
def test_drain_finishes_null_chunks_and_single_outcomes_in_order(with_futures: bool) -> None:
    """A worker's chunk of tasks that all returned None goes into the done deque as one
    record; the drain finishes it whole, in order with the single outcomes around it (the
    fast path when every task has a pending future, one by one otherwise)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        backend = DragonExecutionBackendV3(num_workers=1)
        events: list[tuple] = []
        backend.attach(events.append)
        backend._wake_pending = True  # no loop callback: the test drains by hand
        tasks = [ComputeTask(function=noop) for _ in range(7)]
        for t in tasks:
            backend._live[t["uid"]] = t
            backend._claims[t["uid"]] = object()
            if with_futures:
                t._future = loop.create_future()
        first, chunk, failed, tail = tasks[0], tasks[1:4], tasks[4], tasks[5:]
        failed["exception"] = ValueError("boom")
        done = backend._done
        done.append((first, "DONE", 1.0, 11))
        done.append((chunk, DONE_RUN, ([1.5, 2.05, 2.15], [2.0, 2.1, 2.2]), 12))
        done.append((failed, "FAILED", 3.0, 11))
        done.append((tail[:1], DONE_RUN, ([3.5], [4.0]), 12))
        done.append((tail[1], "DONE", 5.0, 11))
        backend._drain()
    finally:
        loop.close()
    assert not done and not backend._live and not backend._claims
    assert [(e[1], e[2], e[0]) for e in events] == [
        (first["uid"], "DONE", 1.0),
        *((t["uid"], "RUNNING", w) for t, w in zip(chunk, (1.5, 2.05, 2.15), strict=True)),
        *((t["uid"], "DONE", w) for t, w in zip(chunk, (2.0, 2.1, 2.2), strict=True)),
        (failed["uid"], "FAILED", 3.0), (tail[0]["uid"], "RUNNING", 3.5),
        (tail[0]["uid"], "DONE", 4.0), (tail[1]["uid"], "DONE", 5.0)]
    assert [t["state"] for t in tasks] == ["DONE"] * 4 + ["FAILED", "DONE", "DONE"]
    if with_futures:
        assert [t._future.result() is t for t in tasks if t is not failed] == [True] * 6
        assert isinstance(failed._future.exception(), ValueError)
