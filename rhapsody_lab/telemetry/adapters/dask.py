"""Each host Dask workers run on, from the scheduler's figures (``client.scheduler_info()``,
one call per poll): CPU % and memory % of the Dask workers on that host, disk byte deltas,
and the GPU where Dask's monitor reads one (NVML on the worker); Dask reports no network."""

from __future__ import annotations

from typing import Any

from ..events import ResourceUpdate, make_event
from .base import PollingAdapter

__all__ = ["DaskTelemetryAdapter"]


class _Host:
    """The sums of one host's workers in one poll."""

    def __init__(self) -> None:
        self.workers: list[str] = []
        self.cpu = self.threads = 0.0  # threads > 0: some worker reported its CPU
        self.used = self.limit = 0.0   # limit > 0: some worker reported its memory
        self.read = self.write = 0.0
        self.deltas = False
        self.gpu: list[float] = []


class DaskTelemetryAdapter(PollingAdapter):
    """One node-level ``ResourceUpdate`` per worker host per poll (``node_id``: the host),
    and one per-GPU update (``gpu_id`` 0) where the workers report ``gpu_utilization``.

    ``cpu_percent``: the workers' process CPU % summed over the host's workers, divided by
    their threads (so 100 % = every Dask thread on that host busy; one worker alone: its
    own figure); ``memory_percent``: their memory over their ``memory_limit``s.
    """

    def __init__(self, client: Any, session_id: str, backend_name: str,
                 interval: float = 5.0):
        super().__init__(session_id, backend_name, interval)
        self.client = client
        self._last: dict[str, tuple[float, float]] = {}  # worker -> (read, write) bytes

    def poll(self) -> list:
        workers = self.client.scheduler_info().get("workers", {})
        hosts: dict[str, _Host] = {}
        for address, info in workers.items():
            h = hosts.setdefault(str(info.get("host") or address), _Host())
            h.workers.append(address)
            metrics = info.get("metrics", {})
            cpu = metrics.get("cpu")
            if cpu is not None:
                h.cpu += float(cpu)
                h.threads += max(1, int(info.get("nthreads") or 1))
            limit, used = info.get("memory_limit") or 0, metrics.get("memory")
            if limit and used is not None:
                h.used += used
                h.limit += limit
            read, write = metrics.get("read_bytes"), metrics.get("write_bytes")
            if read is not None and write is not None:
                before = self._last.get(address)
                if before is not None:
                    h.deltas = True
                    h.read += max(0.0, read - before[0])
                    h.write += max(0.0, write - before[1])
                self._last[address] = (read, write)
            gpu = metrics.get("gpu_utilization")
            if gpu is not None:
                h.gpu.append(float(gpu))
        events = []
        for node, h in hosts.items():
            base = {"session_id": self.session_id, "backend": self.backend_name,
                    "node_id": node}
            gpu = max(h.gpu) if h.gpu else None
            events.append(make_event(
                ResourceUpdate, **base,
                cpu_percent=min(100.0, h.cpu / h.threads) if h.threads else None,
                memory_percent=100.0 * h.used / h.limit if h.limit else None,
                gpu_percent=gpu,
                disk_read_bytes=h.read if h.deltas else None,
                disk_write_bytes=h.write if h.deltas else None,
                attributes={"workers": ",".join(h.workers)}))
            if gpu is not None:
                events.append(make_event(ResourceUpdate, **base, gpu_id=0, gpu_percent=gpu))
        return events
