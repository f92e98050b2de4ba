"""A policy with ``type: flux``: MPI-style tasks routed to a real Flux instance."""

from __future__ import annotations

import pytest
from flux_site import require_flux

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.backends._flux_broker import session_pids
from rhapsody_lab.resources import Allocation

_INSTALL = require_flux()

FOUR = Allocation(("n0",), (4,), (0,), "local")
POLICY = {
    "backends": {"mpi": {"type": "flux", "cores": 2, "options": {"test_size": 1}},
                 "fn": {"type": "concurrent", "cores": 2}},
    "routing": [{"min_ranks": 2, "backend": "mpi"}, {"kind": "executable", "backend": "mpi"}],
    "default": "fn",
}


def double(x):
    return 2 * x


async def test_ranked_and_executable_tasks_go_to_flux(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    async with Session.from_policy(POLICY, FOUR) as session:
        flux = session.backends["mpi"]
        assert type(flux).__name__ == "FluxExecutionBackend"
        ranked = ComputeTask(executable="sh", arguments=["-c", "echo r$FLUX_TASK_RANK"],
                             ranks=2)
        exe = ComputeTask(executable="hostname")
        fn = ComputeTask(function=double, args=(21,))
        await session.submit_tasks([ranked, exe, fn])
        await session.wait_tasks([ranked, exe, fn], timeout=60)
        assert ranked.backend == exe.backend == "mpi" and fn.backend == "fn"
        assert sorted(ranked.stdout.split()) == ["r0", "r1"]  # one job of 2 ranks
        assert exe.state == "DONE" and fn.return_value == 42
        broker = flux.broker
    assert not broker.alive() and session_pids(broker.pid) == []


def test_bad_flux_options_name_the_key():
    bad = {**POLICY, "backends": {**POLICY["backends"],
                                  "mpi": {"type": "flux", "options": {"test_size": 0}}}}
    with pytest.raises(SessionError, match=r"backends\.mpi\.options.*test_size"):
        Session.from_policy(bad, FOUR)
