"""Finished spans as OTLP JSON (the protobuf JSON mapping of ``ExportTraceServiceRequest``),
readable by Jaeger, Tempo, Grafana or ``otel-cli``; the JSONL checkpoint is the analysis
format, this is the interchange one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["any_value", "spans_to_otlp"]


def any_value(value: Any) -> dict[str, Any]:
    """An attribute value as an OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a JSON string in the mapping
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in (attrs or {}).items()]


def _span(s: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"code": s.status.status_code.value}
    if s.status.description:
        status["message"] = s.status.description
    row: dict[str, Any] = {
        "traceId": f"{s.context.trace_id:032x}", "spanId": f"{s.context.span_id:016x}",
        "name": s.name, "kind": s.kind.value + 1,  # SDK INTERNAL=0 -> OTLP SPAN_KIND_INTERNAL=1
        "startTimeUnixNano": str(s.start_time or 0), "endTimeUnixNano": str(s.end_time or 0),
        "attributes": _attributes(s.attributes), "status": status}
    if s.parent is not None:
        row["parentSpanId"] = f"{s.parent.span_id:016x}"
    if s.events:
        row["events"] = [{"timeUnixNano": str(e.timestamp), "name": e.name,
                          "attributes": _attributes(e.attributes)} for e in s.events]
    return row


def spans_to_otlp(spans: Iterable[Any], resource: dict[str, Any], session_id: str,
                  path: str | os.PathLike | None = None) -> str:
    """``spans`` (SDK ``ReadableSpan``) as one OTLP JSON document; written to ``path``."""
    resource = {**resource}
    resource.setdefault("session_id", session_id)
    doc = {"resourceSpans": [{
        "resource": {"attributes": _attributes(resource)},
        "scopeSpans": [{"scope": {"name": "rhapsody_lab"},
                        "spans": [_span(s) for s in spans]}]}]}
    text = json.dumps(doc)
    if path is not None:
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text
