"""Pull view of a TelemetryManager."""

from __future__ import annotations

from typing import Any

__all__ = ["TelemetryReader"]


class TelemetryReader:
    """``read_metrics()`` (OpenTelemetry ``MetricsData``) and ``read_traces()`` (spans)."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def read_metrics(self) -> Any:
        """Walk ``resource_metrics -> scope_metrics -> metrics -> data.data_points``."""
        return self._manager.read_metrics()

    def read_traces(self, session_id: str | None = None, task_id: str | None = None
                    ) -> tuple:
        """Finished spans, only those whose ``session_id``/``task_id`` attribute matches."""
        spans = self._manager.read_traces()
        for key, want in (("session_id", session_id), ("task_id", task_id)):
            if want is not None:
                spans = tuple(s for s in spans if (s.attributes or {}).get(key) == want)
        return spans
