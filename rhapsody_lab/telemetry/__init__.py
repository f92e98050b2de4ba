"""Telemetry as RHAPSODY 0.6.0 offers it, built on the session's one event stream.

::

    telemetry = await session.start_telemetry(checkpoint_path="./out/")
    telemetry.subscribe(lambda e: print(e.event_type, e.task_id))
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks)
    print(telemetry.summary(), telemetry.task_spans()[:3])
    spans, metrics = telemetry.read_traces(), telemetry.read_metrics()   # OpenTelemetry SDK
    await session.close()                                                # stops telemetry

Spans and metrics go through the OpenTelemetry SDK: pass ``span_processors=`` (e.g.
``BatchSpanProcessor(OTLPSpanExporter())``) and ``metric_readers=`` to export them.
Needs ``pip install 'rhapsody-lab[telemetry]'``; importing this package (and its
``events``) does not import OpenTelemetry, ``start`` does. Importing it registers the
``"telemetry"`` provider that ``Session.start_telemetry`` calls (``api.extensions``).
"""

from __future__ import annotations

from typing import Any

from ..api.extensions import register_provider
from .events import (
    BaseEvent,
    ResourceUpdate,
    SessionEnded,
    SessionStarted,
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSubmitted,
    define_event,
    make_event,
)
from .interfaces import TelemetryReader, TelemetrySubscriber
from .manager import TelemetryManager

__all__ = [
    "BaseEvent",
    "ResourceUpdate",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskQueued",
    "TaskStarted",
    "TaskSubmitted",
    "TelemetryManager",
    "TelemetryReader",
    "TelemetrySubscriber",
    "define_event",
    "make_event",
]


async def start_for_session(session: Any, **options: Any) -> TelemetryManager:
    """The ``"telemetry"`` provider: a started manager fed by ``session``'s events, with a
    resource poller for each backend (one for this node, however many run here)."""
    manager = TelemetryManager(session.uid, **options)
    manager._bind(session)
    for backend in session.backends.values():
        manager.backend_added(backend)
    await manager.start()
    return manager


register_provider("telemetry", start_for_session)
