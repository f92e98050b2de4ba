"""``%rhapsody start --backend flux``: the magics on a real Flux instance started for them."""

from __future__ import annotations

from flux_site import require_flux
from rh_nb_helpers import run

from rhapsody_lab.backends._flux_broker import session_pids

_INSTALL = require_flux()


def test_start_backend_flux_runs_cells_and_maps_as_flux_jobs(ip, monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    run(ip, "%rhapsody start --backend flux")
    session = ip.user_ns["session"]
    run(ip, "%rhapsody wait")  # the instance is up once the session has started
    backend = session.backends["flux"]
    assert type(backend).__name__ == "FluxExecutionBackend" and backend.uri
    run(ip, "base = 10")
    run(ip, "%rhapsody map abs range(-3, 0)")
    run(ip, "%%rhapsody task t_sh --shell\ntest -n \"$FLUX_JOB_ID\" && echo in-flux")
    run(ip, "%%rhapsody task t_fn\nbase * 4")
    run(ip, "%rhapsody wait")
    assert [t.return_value for t in ip.user_ns["tasks"]] == [3, 2, 1]
    assert ip.user_ns["t_sh"].stdout == "in-flux\n"
    assert ip.user_ns["t_fn"].return_value == 40
    broker = backend.broker
    run(ip, "%rhapsody stop")
    assert session.closed and not broker.alive() and session_pids(broker.pid) == []
