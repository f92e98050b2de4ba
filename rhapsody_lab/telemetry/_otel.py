"""The OpenTelemetry side: providers, instruments, the session span and one span per task.

Everything goes through the real SDK (``opentelemetry-sdk``), so a user's span processors
and metric readers (an OTLP exporter) see what the telemetry's own in-memory reader and
span buffer see. A task's span is made in one go when the task ends, with the task's real
start and end times (``start_span(start_time=)``, ``end(end_time=)``): the SDK exports a
span only once it has ended, so nothing is lost and a task costs one span, not an open
span object per live task. Its span id can be chosen earlier (``preset_span_id``) so the
checkpoint lines of the task's first events already name it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Status, StatusCode

__all__ = ["COUNTERS", "Otel", "SpanBuffer", "new_span_id"]

#: counter name -> the event stream state it counts
COUNTERS = {"tasks_submitted": "SUBMITTED", "tasks_started": "RUNNING",
            "tasks_completed": "DONE", "tasks_failed": "FAILED", "tasks_canceled": "CANCELED"}
_STATUS = {"DONE": "completed", "FAILED": "failed", "CANCELED": "canceled"}


def new_span_id() -> int:
    """A random non-zero 64-bit span id."""
    while True:
        value = int.from_bytes(os.urandom(8), "little")
        if value:
            return value


class SpanBuffer(SpanExporter):
    """Keeps every finished span in memory (appending is O(1); reads copy under a lock).

    ``shutdown`` keeps them, so ``read_traces()`` works after the session closed.
    """

    def __init__(self) -> None:
        self._spans: list = []
        self._lock = threading.Lock()

    def export(self, spans: Any) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def get_finished_spans(self, start: int = 0) -> tuple:
        with self._lock:
            return tuple(self._spans[start:])

    def __len__(self) -> int:
        return len(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def shutdown(self) -> None:
        """Nothing to release; the spans stay readable."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class _Ids(RandomIdGenerator):
    """Random ids, except a span id preset by the thread about to start a span."""

    def __init__(self) -> None:
        self._next = threading.local()

    def generate_span_id(self) -> int:
        preset = getattr(self._next, "span_id", None)
        if preset is not None:
            self._next.span_id = None
            return preset
        return super().generate_span_id()


class Otel:
    """The SDK objects of one telemetry manager (see the module docstring)."""

    def __init__(self, session_id: str, span_processors: Iterable[Any] = (),
                 metric_readers: Iterable[Any] = (), resource: Any = None):
        self.session_id = session_id
        self.resource = resource if resource is not None else Resource.create(
            {"service.name": "rhapsody_lab", "session_id": session_id})
        self.reader = InMemoryMetricReader()
        self.spans = SpanBuffer()
        self._ids = _Ids()
        self.meters = MeterProvider(metric_readers=[self.reader, *metric_readers],
                                    resource=self.resource)
        self.tracers = TracerProvider(resource=self.resource, id_generator=self._ids)
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        for processor in span_processors:
            self.tracers.add_span_processor(processor)
        self.tracer = self.tracers.get_tracer("rhapsody_lab")
        meter = self.meters.get_meter("rhapsody_lab")
        self.counters = {name: meter.create_counter(name, description=f"tasks that reached "
                                                    f"{state}")
                         for name, state in COUNTERS.items()}
        self.running = meter.create_up_down_counter("tasks_running",
                                                    description="tasks running now")
        self.duration = meter.create_histogram(
            "task_duration_seconds", unit="s", description="task run time (RUNNING to end)")
        self.gauges = {key: meter.create_gauge(f"node_{key}_utilization", unit="%",
                                               description=f"node {key} utilisation")
                       for key in ("cpu", "memory", "gpu")}
        self.session_span = self.tracer.start_span(
            "session", attributes={"session_id": session_id, "backend": "rhapsody_lab"})
        self.session_context = trace.set_span_in_context(self.session_span)
        ctx = self.session_span.get_span_context()
        self.trace_id, self.session_span_id = ctx.trace_id, ctx.span_id
        self._attrs: dict[str, dict[str, str]] = {}  # backend -> metric attributes

    def attrs(self, backend: str) -> dict[str, str]:
        """Metric attributes of ``backend`` (one dict each; no per-task attributes, so the
        number of data points stays the number of backends)."""
        found = self._attrs.get(backend)
        if found is None:
            found = self._attrs[backend] = {"session_id": self.session_id,
                                            "backend": backend or ""}
        return found

    def task_span(self, state: str, start: float, end: float, queued: float | None,
                  attributes: dict[str, Any], span_id: int | None = None,
                  error_type: str | None = None) -> None:
        """Record the finished span of a task that ended in ``state`` (times in seconds)."""
        attributes["status"] = _STATUS[state]
        if error_type is not None:
            attributes["error_type"] = error_type
        if span_id is not None:
            self._ids._next.span_id = span_id
        span = self.tracer.start_span("task", context=self.session_context,
                                      attributes=attributes, start_time=int(start * 1e9))
        if queued is not None:
            span.add_event("TaskQueued", {"task_id": attributes.get("task_id", "")},
                           timestamp=int(queued * 1e9))
        if state == "DONE":
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end(end_time=int(end * 1e9))

    def resource_update(self, event: Any) -> None:
        """Set the node gauges from a ``ResourceUpdate``."""
        attrs = {**self.attrs(event.backend), "node_id": event.node_id or ""}
        if event.gpu_id is not None:
            attrs["gpu_id"] = event.gpu_id
        for key, value in (("cpu", event.cpu_percent), ("memory", event.memory_percent),
                           ("gpu", event.gpu_percent)):
            if value is not None:
                self.gauges[key].set(value, attrs)

    def end_session(self, end: float) -> None:
        if self.session_span.is_recording():
            self.session_span.end(end_time=int(end * 1e9))

    def shutdown(self) -> None:
        self.meters.shutdown()
        self.tracers.shutdown()
