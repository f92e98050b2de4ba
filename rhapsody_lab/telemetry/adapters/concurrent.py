"""This node's utilisation: CPU and memory (psutil), disk and network byte deltas, and one
row per GPU (nvidia-ml-py) where an NVIDIA driver answers; no GPU means no GPU rows."""

from __future__ import annotations

import logging
import socket
from typing import Any

from ..events import ResourceUpdate, make_event
from .base import PollingAdapter

__all__ = ["ConcurrentTelemetryAdapter", "gpu_readings"]

log = logging.getLogger(__name__)


def gpu_readings(state: dict) -> list[tuple[int, float, float]]:
    """``(index, utilisation %, memory %)`` of each NVIDIA GPU; [] without one (or its
    driver). ``state`` remembers across calls whether the library initialised."""
    if state.get("nvml") is False:
        return []
    try:
        import pynvml
        if not state.get("nvml"):
            pynvml.nvmlInit()
            state["nvml"] = True
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append((i, float(util.gpu), 100.0 * mem.used / mem.total if mem.total
                        else 0.0))
        return out
    except Exception:  # no library, no driver, no device: no GPU rows
        state["nvml"] = False
        return []


class ConcurrentTelemetryAdapter(PollingAdapter):
    """Readings of the node this process runs on, tagged with ``backend_name``."""

    def __init__(self, session_id: str, backend_name: str, interval: float = 5.0):
        super().__init__(session_id, backend_name, interval)
        self.node_id = socket.gethostname()
        self._gpu_state: dict[str, Any] = {}
        self._last_io: tuple | None = None
        self._psutil: Any = None

    def poll(self) -> list:
        if self._psutil is None:
            try:
                import psutil
            except ImportError:
                log.warning("resource polling needs psutil: pip install "
                            "'rhapsody-lab[telemetry]'; no ResourceUpdate events")
                self._stop.set()
                return []
            self._psutil = psutil
            psutil.cpu_percent(interval=None)  # the first call only starts the measure
        ps = self._psutil
        cpu = float(ps.cpu_percent(interval=None))
        memory = float(ps.virtual_memory().percent)
        io = self._io(ps)
        gpus = gpu_readings(self._gpu_state)
        base = {"session_id": self.session_id, "backend": self.backend_name,
                "node_id": self.node_id}
        deltas: dict[str, float | None] = dict.fromkeys(
            ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes"))
        if io is not None and self._last_io is not None:
            deltas = {k: float(max(0, now - then)) for k, now, then in
                      zip(deltas, io, self._last_io, strict=True)}
        self._last_io = io
        events = [make_event(ResourceUpdate, cpu_percent=cpu, memory_percent=memory,
                             gpu_percent=max((g[1] for g in gpus), default=None),
                             **deltas, **base)]
        events += [make_event(ResourceUpdate, gpu_id=i, gpu_percent=util,
                              attributes={"gpu_memory_percent": mem}, **base)
                   for i, util, mem in gpus]
        return events

    @staticmethod
    def _io(ps: Any) -> tuple | None:
        try:
            disk, net = ps.disk_io_counters(), ps.net_io_counters()
        except Exception:
            return None
        if disk is None or net is None:
            return None
        return (disk.read_bytes, disk.write_bytes, net.bytes_sent, net.bytes_recv)
