"""Resource polling: a ResourceUpdate per node (CPU %, memory %; one per GPU where
nvidia-ml-py finds one, none without) every resource_poll_interval, in the telemetry's
metrics and summary, in the session's journal, and in the "resources" dashboard plot."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the telemetry extra is not installed")
pytest.importorskip("psutil", reason="the telemetry extra is not installed")

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.observe import attach_journal
from rhapsody_lab.observe.journal import read_resources
from rhapsody_lab.telemetry import ResourceUpdate
from rhapsody_lab.telemetry.adapters import (
    ConcurrentTelemetryAdapter,
    DaskTelemetryAdapter,
)
from rhapsody_lab.telemetry.adapters.concurrent import gpu_readings


def square(x):
    return x * x


def _has_gpu() -> bool:
    return bool(gpu_readings({}))


@pytest.mark.parametrize("process", [True, False], ids=["observer-process", "in-kernel"])
async def test_readings_reach_metrics_summary_and_journal(tmp_path, process):
    async with Session([ConcurrentExecutionBackend(max_workers=2),
                        ConcurrentExecutionBackend(max_workers=1, name="other")],
                       work_dir=tmp_path, uid="res") as s:
        journal = attach_journal(s, process=process)
        tm = await s.start_telemetry(resource_poll_interval=0.1)
        assert len(tm._adapters) == 1  # one poller for this node, not one per backend
        s.add_backend(ConcurrentExecutionBackend(max_workers=1, name="late"))
        assert len(tm._adapters) == 1
        got: list[ResourceUpdate] = []
        tm.subscribe(lambda e: got.append(e) if isinstance(e, ResourceUpdate) else None)
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(50)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
        deadline = time.monotonic() + 10
        while len([e for e in got if e.gpu_id is None]) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        node = [e for e in got if e.gpu_id is None]
        host = socket.gethostname()
        for e in node:
            assert e.node_id == host and e.backend == "concurrent"
            assert e.resource_scope == "per_node"
            assert 0.0 <= e.cpu_percent <= 100.0 and 0.0 < e.memory_percent <= 100.0
        assert node[-1].disk_read_bytes is not None  # deltas from the second reading on
        gpus = [e for e in got if e.gpu_id is not None]
        if not _has_gpu():
            assert gpus == [] and all(e.gpu_percent is None for e in node)
        else:
            assert all(e.resource_scope == "per_gpu" and e.cpu_percent is None for e in gpus)
        summary = tm.summary()["resources"][f"concurrent/{host}"]
        assert summary["node_id"] == host and summary["memory_percent"] > 0
        data = tm.read_metrics()
        names = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics}
        (point,) = names["node_memory_utilization"].data.data_points
        assert point.attributes["node_id"] == host and point.value > 0
        cursor, rows = tm.resource_rows()
        assert cursor == len(rows) >= 3 and tm.resource_rows(cursor) == (cursor, [])
    journal.close()
    rows = read_resources(journal.path)
    assert len(rows) >= 3
    assert {r["node"] for r in rows} == {host}
    assert all(0.0 <= r["cpu"] <= 100.0 for r in rows if r["gpu_id"] is None)
    assert all(abs(r["t"] - time.time()) < 600 for r in rows)


class _FakeDaskClient:
    """The one call the Dask poller makes, answering what a scheduler answers."""

    def __init__(self):
        self.calls = 0

    def scheduler_info(self):
        self.calls += 1
        return {"workers": {
            "tcp://10.0.0.1:4000": {"host": "n1", "memory_limit": 4 << 30, "metrics": {
                "cpu": 50.0, "memory": 1 << 30, "read_bytes": 1000.0 * self.calls,
                "write_bytes": 10.0 * self.calls}},
            "tcp://10.0.0.2:4000": {"host": "n2", "memory_limit": 0, "metrics": {}}}}


def test_dask_poller_reads_every_worker_and_local_poller_stops_cleanly():
    dask = DaskTelemetryAdapter(_FakeDaskClient(), "s", "dask", interval=0.05)
    first, second = dask.poll(), dask.poll()
    assert [e.node_id for e in first] == ["n1", "n2"]
    assert first[0].cpu_percent == 50.0 and first[0].memory_percent == 25.0
    assert first[0].disk_read_bytes is None and second[0].disk_read_bytes == 1000.0
    assert second[1].cpu_percent is None and second[1].memory_percent is None
    local = ConcurrentTelemetryAdapter("s", "concurrent", interval=0.05)
    local.stop()  # safe before start
    local.start()
    local.start()  # once only
    thread = local._thread
    assert thread.daemon and thread.is_alive()
    local.stop()
    assert not thread.is_alive()


def test_resources_dashboard_component_streams_new_readings():
    pytest.importorskip("bokeh", reason="the dashboard extra is not installed")
    from rhapsody_lab.dashboard.components import COMPONENTS, Resources

    class Source:  # what a TelemetryManager offers: resource_rows(since)
        rows = [{"t": 1.0, "node": "n1", "backend": "b", "cpu": 10.0, "memory": 20.0,
                 "gpu_id": None, "gpu": None},
                {"t": 1.0, "node": "n1", "backend": "b", "cpu": None, "memory": None,
                 "gpu_id": 0, "gpu": 70.0}]

        def resource_rows(self, since=0):
            return len(self.rows), self.rows[since:]

    src = Source()
    plot = Resources(src)
    assert "resources" not in COMPONENTS or COMPONENTS["resources"] is Resources
    plot.update()
    data = plot.source.data
    assert list(data["series"]) == ["n1 cpu", "n1 memory", "n1 gpu0"]
    assert list(data["value"]) == [10.0, 20.0, 70.0]
    plot.update()  # nothing new: nothing streamed
    assert len(plot.source.data["value"]) == 3
    src.rows.append({"t": 2.0, "node": "n1", "backend": "b", "cpu": 30.0, "memory": 21.0,
                     "gpu_id": None, "gpu": None})
    plot.update()
    assert list(plot.source.data["value"])[-2:] == [30.0, 21.0]
    assert set(plot.lines) == {"n1 cpu", "n1 memory", "n1 gpu0"}
    assert len(plot.lines["n1 cpu"].data["time"]) == 2
