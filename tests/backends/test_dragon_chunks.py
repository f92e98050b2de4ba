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
