"""Resource pollers: ``ResourceUpdate`` events every ``resource_poll_interval`` seconds.

``ConcurrentTelemetryAdapter`` reads this node (psutil; GPUs through nvidia-ml-py where a
driver answers, else no GPU rows), ``DaskTelemetryAdapter`` every Dask worker's host (the
scheduler's own figures). ``adapter_for(backend)`` picks one for a session's backend.
"""

from __future__ import annotations

from typing import Any

from .base import PollingAdapter, TelemetryAdapter
from .concurrent import ConcurrentTelemetryAdapter
from .dask import DaskTelemetryAdapter

__all__ = ["ConcurrentTelemetryAdapter", "DaskTelemetryAdapter", "PollingAdapter",
           "TelemetryAdapter", "adapter_for"]


def adapter_for(backend: Any, session_id: str, interval: float) -> PollingAdapter:
    """The poller of ``backend``: its Dask client's workers, else this node."""
    client = getattr(backend, "client", None) or getattr(backend, "_client", None)
    if client is not None and callable(getattr(client, "scheduler_info", None)):
        return DaskTelemetryAdapter(client=client, session_id=session_id,
                                    backend_name=backend.name, interval=interval)
    return ConcurrentTelemetryAdapter(session_id=session_id, backend_name=backend.name,
                                      interval=interval)
