"""The JSONL checkpoint: one file per session, readable while the session runs.

Lines carry a ``section``: ``"event"`` (every telemetry event with its ``trace_id`` and
``span_id``, written and flushed batch by batch), ``"metric"`` (a snapshot of every
instrument, each ``checkpoint_interval`` and at the end) and ``"span"`` (finished spans,
each written once, at those same times). The name is ``<session>.<start>.telemetry.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

__all__ = ["Checkpoint", "metric_totals"]

log = logging.getLogger(__name__)
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def metric_totals(data: Any) -> dict[str, float]:
    """Each metric summed over its data points (histograms: ``_count`` and ``_sum``)."""
    out: dict[str, float] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = list(metric.data.data_points)
                if not points:
                    continue
                if hasattr(points[0], "bucket_counts"):
                    out[metric.name + "_count"] = sum(p.count for p in points)
                    out[metric.name + "_sum"] = sum(p.sum for p in points)
                else:
                    out[metric.name] = out.get(metric.name, 0) + sum(p.value for p in points)
    return out


class Checkpoint:
    """Appends telemetry lines to ``<folder>/<session>.<start>.telemetry.jsonl``."""

    def __init__(self, folder: str, session_id: str, started: float):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{session_id}.{int(started)}.telemetry.jsonl")
        self._file = open(self.path, "w", encoding="utf-8", buffering=1 << 17)  # noqa: SIM115
        self._spans_written = 0
        self.failed = False

    def events(self, pairs: list, trace_id: int) -> None:
        """Write ``(event, span_id)`` pairs, then flush (readable at once)."""
        trace = hex(trace_id)
        lines = []
        for event, span in pairs:
            row = {name: getattr(event, name) for name in _fields(type(event))}
            row["trace_id"] = trace
            row["span_id"] = hex(span) if span is not None else None
            row["name"] = event.event_type
            row["section"] = "event"
            lines.append(json.dumps(row, default=str))
        if lines:
            self._write("\n".join(lines) + "\n")

    def snapshot(self, metrics: Any, spans: Any) -> None:
        """A metric snapshot and the spans finished since the last one, then flush."""
        totals = {"checkpoint_time": time.time(), **metric_totals(metrics), "section": "metric"}
        lines = [json.dumps(totals)]
        new = spans.get_finished_spans(self._spans_written)
        self._spans_written += len(new)
        lines += [json.dumps(_span_row(s), default=str) for s in new]
        self._write("\n".join(lines) + "\n")

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except (OSError, ValueError) as exc:
            if not self.failed:
                log.warning("telemetry checkpoint %s: write failed (%s); lines are lost",
                            self.path, exc)
            self.failed = True

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def _span_row(s: Any) -> dict[str, Any]:
    start, end = s.start_time, s.end_time
    return {"name": s.name, "span_id": hex(s.context.span_id),
            "trace_id": hex(s.context.trace_id),
            "parent_span_id": hex(s.parent.span_id) if s.parent else None,
            "start_ns": start, "end_ns": end,
            "start_time_s": start / 1e9 if start else None,
            "end_time_s": end / 1e9 if end else None,
            "duration_ms": round((end - start) / 1e6, 3) if end and start else None,
            "status_code": s.status.status_code.name,
            "status_description": s.status.description or None,
            "attributes": dict(s.attributes or {}), "section": "span"}
