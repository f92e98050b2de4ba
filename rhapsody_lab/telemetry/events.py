"""Telemetry events: frozen dataclasses, one per kind of thing that happened.

The task events are the session's event stream (``rhapsody_lab.api.events``) seen through
RHAPSODY 0.6.0's vocabulary: SUBMITTED gives ``TaskCreated`` and ``TaskSubmitted``,
QUEUED ``TaskQueued``, RUNNING ``TaskStarted``, DONE / FAILED / CANCELED
``TaskCompleted`` / ``TaskFailed`` / ``TaskCanceled``. ``event_time`` is when it happened
(the stream's time), ``emit_time`` when the telemetry turned it into this object.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

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
    "define_event",
    "make_event",
]


def new_event_id() -> str:
    """32 hex digits, unique (random, like a uuid4 without its version bits)."""
    return os.urandom(16).hex()


@dataclass(frozen=True)
class BaseEvent:
    """Fields every event has; ``task_id``/``node_id`` are None where they do not apply.

    ``attributes`` holds task context: ``executable``, ``task_type``, ``error_type`` and
    ``incomplete_lifecycle`` (True when RUNNING was not seen, so the duration is 0.0).
    """

    event_id: str
    event_type: str
    event_time: float
    emit_time: float
    session_id: str
    backend: str
    task_id: str | None = None
    node_id: str | None = None
    attributes: dict = field(default_factory=dict)


def _kind(name: str) -> Any:
    return field(default=name, init=False)


@dataclass(frozen=True)
class SessionStarted(BaseEvent):
    """Telemetry of a session started."""

    event_type: str = _kind("SessionStarted")


@dataclass(frozen=True)
class SessionEnded(BaseEvent):
    """Telemetry of a session stopped; ``duration_seconds`` since it started."""

    duration_seconds: float = 0.0
    event_type: str = _kind("SessionEnded")


@dataclass(frozen=True)
class TaskCreated(BaseEvent):
    """A task was registered with the session (its future bound), before any backend."""

    event_type: str = _kind("TaskCreated")


@dataclass(frozen=True)
class TaskSubmitted(BaseEvent):
    """A task was routed to a backend (``backend`` is set)."""

    event_type: str = _kind("TaskSubmitted")


@dataclass(frozen=True)
class TaskQueued(BaseEvent):
    """A backend accepted a task into its queue."""

    event_type: str = _kind("TaskQueued")


@dataclass(frozen=True)
class TaskStarted(BaseEvent):
    """A task began to run (RUNNING)."""

    event_type: str = _kind("TaskStarted")


@dataclass(frozen=True)
class TaskCompleted(BaseEvent):
    """A task ended DONE; ``duration_seconds`` from RUNNING (0.0 if RUNNING was not seen)."""

    duration_seconds: float = 0.0
    event_type: str = _kind("TaskCompleted")


@dataclass(frozen=True)
class TaskFailed(BaseEvent):
    """A task ended FAILED; ``error_type`` is its exception's class name."""

    duration_seconds: float = 0.0
    error_type: str = "unknown"
    event_type: str = _kind("TaskFailed")


@dataclass(frozen=True)
class TaskCanceled(BaseEvent):
    """A task ended CANCELED (by the user, or by ``session.close()``)."""

    duration_seconds: float = 0.0
    event_type: str = _kind("TaskCanceled")


@dataclass(frozen=True)
class ResourceUpdate(BaseEvent):
    """Utilisation of one node (``gpu_id`` None: ``resource_scope`` "per_node") or of one
    GPU of it (``gpu_id`` set: "per_gpu", only ``gpu_percent``). Percentages are readings
    at ``event_time``; disk and network fields are bytes since the previous reading."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    gpu_id: int | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    net_sent_bytes: float | None = None
    net_recv_bytes: float | None = None
    event_type: str = _kind("ResourceUpdate")
    resource_scope: str = field(init=False, default="")

    def __post_init__(self) -> None:
        scope = "per_node" if self.gpu_id is None else "per_gpu"
        object.__setattr__(self, "resource_scope", scope)


_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(BaseEvent))
_ZERO = {float: 0.0, int: 0, str: "", bool: False}


def define_event(name: str, **fields: Any) -> type:
    """A new event class ``name`` (namespaced: ``"myapp.Checked"``) with ``fields``.

    Each field is a type (its zero value is the default: 0.0, 0, "", False, else None) or
    a ``(type, default)`` pair; a field may not reuse a ``BaseEvent`` field name.
    """
    if not isinstance(name, str) or "." not in name:
        raise ValueError(f"define_event: name {name!r} must be namespaced, e.g. "
                         f"'myapp.{name}', so it cannot collide with another system's events")
    clash = sorted(_BASE_FIELDS.intersection(fields))
    if clash:
        raise ValueError(f"define_event: fields {clash} are BaseEvent fields; give them "
                         "other names")
    specs: list[tuple[str, Any, Any]] = []
    for fname, spec in fields.items():
        ftype, default = spec if isinstance(spec, tuple) else (spec, _ZERO.get(spec))
        specs.append((fname, ftype, field(default=default)))
    specs.append(("event_type", str, _kind(name)))
    return dataclasses.make_dataclass(name, specs, bases=(BaseEvent,), frozen=True)


def make_event(cls: type, *, session_id: str, backend: str, **values: Any) -> BaseEvent:
    """An event of ``cls`` with a fresh id; ``event_time`` defaults to now (= emit time)."""
    now = time.time()
    return cls(event_id=new_event_id(), event_time=values.pop("event_time", now),
               emit_time=now, session_id=session_id, backend=backend, **values)
