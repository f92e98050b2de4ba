"""Each Dask worker's host, from the scheduler's figures (``client.scheduler_info()``):
CPU %, memory % of the worker's limit, disk byte deltas; Dask reports no network or GPU."""

from __future__ import annotations

from typing import Any

from ..events import ResourceUpdate, make_event
from .base import PollingAdapter

__all__ = ["DaskTelemetryAdapter"]


class DaskTelemetryAdapter(PollingAdapter):
    """One node-level ``ResourceUpdate`` per worker per poll (``node_id``: its host)."""

    def __init__(self, client: Any, session_id: str, backend_name: str,
                 interval: float = 5.0):
        super().__init__(session_id, backend_name, interval)
        self.client = client
        self._last: dict[str, tuple[float, float]] = {}  # worker -> (read, write) bytes

    def poll(self) -> list:
        workers = self.client.scheduler_info().get("workers", {})
        events = []
        for address, info in workers.items():
            metrics = info.get("metrics", {})
            limit = info.get("memory_limit") or 0
            used = metrics.get("memory")
            memory = 100.0 * used / limit if limit and used is not None else None
            read, write = metrics.get("read_bytes"), metrics.get("write_bytes")
            before = self._last.get(address)
            deltas: dict[str, float | None] = {"disk_read_bytes": None,
                                               "disk_write_bytes": None}
            if read is not None and write is not None:
                if before is not None:
                    deltas = {"disk_read_bytes": max(0.0, read - before[0]),
                              "disk_write_bytes": max(0.0, write - before[1])}
                self._last[address] = (read, write)
            cpu = metrics.get("cpu")
            events.append(make_event(
                ResourceUpdate, session_id=self.session_id, backend=self.backend_name,
                node_id=str(info.get("host") or address),
                cpu_percent=float(cpu) if cpu is not None else None,
                memory_percent=memory, attributes={"worker": address}, **deltas))
        return events
