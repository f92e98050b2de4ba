"""Plain-dict readers of a TelemetryManager: no OpenTelemetry knowledge needed."""

from __future__ import annotations

from typing import Any

from ._checkpoint import metric_totals

__all__ = ["Summaries"]


class Summaries:
    """``task_count``, ``task_spans`` and ``summary`` over ``read_metrics``/``read_traces``."""

    _session_id: str
    _fold: Any

    def read_metrics(self) -> Any:  # provided by TelemetryManager
        raise NotImplementedError

    def read_traces(self) -> tuple:
        raise NotImplementedError

    def session_duration(self) -> float:
        raise NotImplementedError

    def task_count(self) -> dict[str, int]:
        """Tasks submitted, completed, failed, canceled and running now."""
        totals = metric_totals(self.read_metrics())
        return {key: int(totals.get(f"tasks_{key}", 0))
                for key in ("submitted", "completed", "failed", "canceled", "running")}

    def task_spans(self) -> list[dict[str, Any]]:
        """One dict per task span: task_id, backend, executable, task_type, status,
        duration_seconds (created to end), span_id, trace_id; error_type if it failed,
        incomplete_lifecycle if RUNNING was not seen."""
        out = []
        for s in self.read_traces():
            if s.name != "task":
                continue
            a = s.attributes or {}
            row: dict[str, Any] = {
                "task_id": a.get("task_id"), "backend": a.get("backend"),
                "executable": a.get("executable", ""), "task_type": a.get("task_type", ""),
                "status": a.get("status"),
                "duration_seconds": round((s.end_time - s.start_time) / 1e9, 6)
                if s.end_time else None,
                "span_id": hex(s.context.span_id), "trace_id": hex(s.context.trace_id)}
            if "error_type" in a:
                row["error_type"] = a["error_type"]
            if a.get("incomplete_lifecycle"):
                row["incomplete_lifecycle"] = True
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        """Session id and duration, task counts, span duration statistics and the latest
        resource reading of each node."""
        spans = self.task_spans()
        durations = [s["duration_seconds"] for s in spans if s["duration_seconds"]
                     is not None and not s.get("incomplete_lifecycle")]
        stats: dict[str, float] = {}
        if durations:
            stats = {"total_seconds": round(sum(durations), 6),
                     "mean_seconds": round(sum(durations) / len(durations), 6),
                     "min_seconds": round(min(durations), 6),
                     "max_seconds": round(max(durations), 6)}
        resources = {k: dict(v) for k, v in self._fold.resources.items()} \
            if self._fold is not None else {}
        return {"session_id": self._session_id, "duration_seconds": self.session_duration(),
                "tasks": self.task_count(), "duration": stats, "resources": resources}
