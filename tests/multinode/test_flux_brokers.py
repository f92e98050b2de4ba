"""Flux with several brokers (``flux start --test-size=4``): an instance of four "nodes" on
this host, as on a multi-node allocation where each node runs one broker. Ranks of an
MPI-style task must land on different brokers, and a policy-free session must see all of
the instance's cores. Skipped where flux-core or its bindings are missing.
"""

from __future__ import annotations

import pytest
from flux_site import require_flux

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import FluxExecutionBackend
from rhapsody_lab.backends._flux_broker import session_pids

_INSTALL = require_flux()

BROKERS = 4


@pytest.fixture(autouse=True)
def _own_instance(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)


def _where(ranks: int, cores_per_rank: int, **kw) -> ComputeTask:
    """A task whose every rank prints ``<task rank> <broker rank>`` (the job shell points
    FLUX_URI at the broker the rank runs under)."""
    return ComputeTask(
        executable="sh",
        arguments=["-c", f'echo "$FLUX_TASK_RANK $({_INSTALL.flux} getattr rank)"'],
        task_backend_specific_kwargs={"ranks": ranks, "cores_per_rank": cores_per_rank,
                                      "type": "mpi", **kw})


def _placement(task: ComputeTask) -> dict[int, int]:
    pairs = (line.split() for line in task.stdout.splitlines() if line.strip())
    return {int(rank): int(broker) for rank, broker in pairs}


async def test_ranks_of_one_task_land_on_different_brokers(no_children):
    backend = FluxExecutionBackend(test_size=BROKERS)
    async with Session([backend]) as session:
        per_broker = backend.capacity() // BROKERS
        assert per_broker >= 1 and backend.capacity() == per_broker * BROKERS
        # a rank takes a whole broker's cores: the four ranks need the four brokers
        spread = _where(BROKERS, per_broker)
        # ranks that fit on one broker's cores are still placed by Flux, on any broker
        packed = _where(2, 1)
        await session.submit_tasks([spread, packed])
        await session.wait_tasks([spread, packed], timeout=120)
        assert spread.state == "DONE", spread.stderr
        where = _placement(spread)
        assert sorted(where) == list(range(BROKERS))
        assert sorted(where.values()) == list(range(BROKERS)), where  # one rank per broker
        assert packed.state == "DONE" and sorted(_placement(packed)) == [0, 1]
        broker = backend.broker
        assert len(broker.broker_pids()) == BROKERS
    assert not broker.alive() and session_pids(broker.pid) == []


async def test_tasks_fill_every_broker(no_children):
    """Many one-core tasks spread over all brokers of the instance."""
    backend = FluxExecutionBackend(test_size=BROKERS)
    async with Session([backend]) as session:
        tasks = [_where(1, 1) for _ in range(4 * backend.capacity())]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=180)
        assert all(t.state == "DONE" for t in tasks), [t.stderr for t in tasks][:3]
        used = {b for t in tasks for b in _placement(t).values()}
        assert used == set(range(BROKERS))
