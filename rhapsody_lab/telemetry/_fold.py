"""Folding the event stream into telemetry: counters, run times, one span per task, events.

Runs on the telemetry's own thread (``manager``). A stream batch ``(time, uid, state,
backend, slot)`` costs a dict update per event; counters are added once per batch and
backend; a task's span and its run-time histogram value are recorded when it ends. The
``BaseEvent`` objects (RHAPSODY's vocabulary) are built only while someone reads them: a
subscriber or the JSONL checkpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..api.events import expand
from . import events as ev
from ._otel import COUNTERS, Otel, new_span_id

__all__ = ["MAX_ROWS", "Fold", "describe", "resource_row"]

_TERMINAL = {"DONE": ev.TaskCompleted, "FAILED": ev.TaskFailed, "CANCELED": ev.TaskCanceled}
_LIVE = {"QUEUED": ev.TaskQueued, "RUNNING": ev.TaskStarted}
#: a task event emitted by hand -> the stream state it stands for
_STATE_OF = {"TaskCreated": "CREATED", "TaskSubmitted": "SUBMITTED", "TaskQueued": "QUEUED",
             "TaskStarted": "RUNNING", "TaskCompleted": "DONE", "TaskFailed": "FAILED",
             "TaskCanceled": "CANCELED"}
_COUNTED = {state: name for name, state in COUNTERS.items()}
# a live task's record: [t_created, t_queued, t_running, span id, (executable, task type)]
_T0, _TQ, _TR, _SPAN, _DESC = range(5)


MAX_ROWS = 100_000  # resource readings kept in memory (the journal keeps them all)


def resource_row(event: ev.ResourceUpdate) -> dict[str, Any]:
    """A reading as a flat row: t, node, backend, cpu, memory, gpu_id, gpu (percent)."""
    return {"t": event.event_time, "node": event.node_id or "", "backend": event.backend,
            "cpu": event.cpu_percent, "memory": event.memory_percent,
            "gpu_id": event.gpu_id, "gpu": event.gpu_percent}


def describe(task: Any) -> tuple[str, str]:
    """``(executable, task_type)`` of a task: the executable, the function's name or the
    model, and the class name (``ComputeTask``, ``AITask``)."""
    if task is None:
        return "", ""
    kind = type(task).__name__
    get = task.get
    exe = get("executable")
    if exe is not None:
        return str(exe), kind
    fn = get("function")
    if fn is not None:
        return getattr(fn, "__name__", None) or str(fn), kind
    return str(get("model") or ""), kind


class Fold:
    """The per-task bookkeeping of one telemetry manager (see the module docstring)."""

    def __init__(self, otel: Otel, session_id: str, index: dict | None = None):
        self.otel = otel
        self.session_id = session_id
        self.index = index  # uid -> task (the session's task index), or None
        self.live: dict[str, list] = {}
        self.enrichers: list[Any] = []
        self.resources: dict[str, dict] = {}  # "backend/node" -> its latest reading
        self.rows: list[dict] = []  # every reading, flat (see ``resource_row``), in order
        self.rows_dropped = 0  # the oldest rows let go beyond ``MAX_ROWS``
        self.folded = 0

    # -- input -------------------------------------------------------------------------
    def fold_items(self, items: Sequence[tuple], out: list | None) -> None:
        """Stream items (events and runs); ``out`` (or None) collects ``(event, span)``."""
        counts: Counter = Counter()
        step = self._step
        for t, uid, state, backend, _slot in expand(items):
            step(t, uid, state, backend or "", counts, out, None)
        self._count(counts)
        self.folded += len(items)

    def fold_events(self, events: Sequence[ev.BaseEvent], out: list | None) -> None:
        """Events emitted by hand (``TelemetryManager.emit``), counted once per batch."""
        counts: Counter = Counter()
        for event in events:
            state = _STATE_OF.get(event.event_type)
            if state is not None and event.task_id is not None:
                self._step(event.event_time, event.task_id, state, event.backend or "",
                           counts, out, event)
                continue
            if isinstance(event, ev.ResourceUpdate):
                self._resource(event)
            if out is not None:
                out.append((event, self.span_of(event)))
        self._count(counts)

    def span_of(self, event: ev.BaseEvent) -> int | None:
        """The span an event belongs to: its live task's, else the session's."""
        rec = self.live.get(event.task_id) if event.task_id else None
        if rec is not None:
            if rec[_SPAN] is None:
                rec[_SPAN] = new_span_id()
            return rec[_SPAN]
        return self.otel.session_span_id if not event.task_id else None

    # -- one state change --------------------------------------------------------------
    def _step(self, t: float, uid: str, state: str, backend: str, counts: Counter,
              out: list | None, given: ev.BaseEvent | None) -> None:
        rec = self.live.get(uid)
        if state in _TERMINAL:
            self._end(t, uid, state, backend, counts, out, given)
            return
        if rec is None:
            rec = self.live[uid] = [t, None, None, None, None]
        if state == "RUNNING":
            rec[_TR] = t
            counts["RUNNING", backend] += 1
        elif state == "QUEUED":
            rec[_TQ] = t
        elif state == "SUBMITTED":
            counts["SUBMITTED", backend] += 1
        if out is None:
            return
        if rec[_SPAN] is None:
            rec[_SPAN] = new_span_id()
        if given is not None:
            out.append((given, rec[_SPAN]))
            return
        attrs = self._attributes(uid, rec)
        if state == "SUBMITTED":
            for cls in (ev.TaskCreated, ev.TaskSubmitted):
                out.append((self._make(cls, t, uid, backend, dict(attrs)), rec[_SPAN]))
        elif state in _LIVE:
            out.append((self._make(_LIVE[state], t, uid, backend, attrs), rec[_SPAN]))

    def _end(self, t: float, uid: str, state: str, backend: str, counts: Counter,
             out: list | None, given: ev.BaseEvent | None) -> None:
        rec = self.live.pop(uid, None)
        task = self.index.pop(uid, None) if self.index is not None else None
        counts[state, backend] += 1
        started = rec[_TR] if rec is not None else None
        if started is not None:
            counts["RUNNING_END", backend] += 1
        if given is not None:
            a = given.attributes or {}
            exe, kind = a.get("executable", ""), a.get("task_type", "")
            duration = float(getattr(given, "duration_seconds", 0.0) or 0.0)
            error = a.get("error_type", getattr(given, "error_type", "unknown"))
            incomplete = bool(a.get("incomplete_lifecycle"))  # as the emitter says
        else:
            exe, kind = rec[_DESC] if rec is not None and rec[_DESC] else describe(task)
            duration = max(t - started, 0.0) if started is not None else 0.0
            exc = task.get("exception") if task is not None else None
            error = type(exc).__name__ if exc is not None else "unknown"
            incomplete = started is None
        attrs: dict[str, Any] = {"executable": exe, "task_type": kind}
        if state == "FAILED":
            attrs["error_type"] = error
        if incomplete:
            attrs["incomplete_lifecycle"] = True
        span_id = rec[_SPAN] if rec is not None else None
        if span_id is None and (out is not None or self.enrichers):
            span_id = new_span_id()
        event = given
        if event is None and (out is not None or self.enrichers):
            extra = {"error_type": error} if state == "FAILED" else {}
            event = self._make(_TERMINAL[state], t, uid, backend, attrs,
                               duration_seconds=duration, **extra)
        metric = self.otel.attrs(backend)
        self.otel.duration.record(duration, metric)
        span_attrs = {"session_id": self.session_id, "backend": backend, "task_id": uid,
                      "executable": exe, "task_type": kind}
        if incomplete:
            span_attrs["incomplete_lifecycle"] = True
        for enrich in self.enrichers:
            try:
                span_attrs.update(enrich(event))
            except Exception:  # a user's enricher must not break the telemetry
                pass
        start = rec[_T0] if rec is not None else (started if started is not None else t)
        self.otel.task_span(state, min(start, t), t, rec[_TQ] if rec is not None else None,
                            span_attrs, span_id,
                            error if state == "FAILED" else None)
        if out is not None:
            out.append((event, span_id))

    # -- helpers -----------------------------------------------------------------------
    def _attributes(self, uid: str, rec: list) -> dict[str, Any]:
        if rec[_DESC] is None:
            task = self.index.get(uid) if self.index is not None else None
            rec[_DESC] = describe(task)
        exe, kind = rec[_DESC]
        return {"executable": exe, "task_type": kind}

    def _make(self, cls: type, t: float, uid: str, backend: str, attrs: dict,
              **values: Any) -> ev.BaseEvent:
        return ev.make_event(cls, session_id=self.session_id, backend=backend,
                             event_time=t, task_id=uid, attributes=attrs, **values)

    def _count(self, counts: Counter) -> None:
        otel = self.otel
        for (state, backend), n in counts.items():
            attrs = otel.attrs(backend)
            if state == "RUNNING_END":
                otel.running.add(-n, attrs)
                continue
            if state == "RUNNING":
                otel.running.add(n, attrs)
            otel.counters[_COUNTED[state]].add(n, attrs)

    def _resource(self, event: ev.ResourceUpdate) -> None:
        self.otel.resource_update(event)
        self.rows.append(resource_row(event))
        if len(self.rows) > MAX_ROWS:
            del self.rows[:MAX_ROWS // 10]
            self.rows_dropped += MAX_ROWS // 10
        key = f"{event.backend}/{event.node_id}"
        if event.gpu_id is not None:
            self.resources.setdefault(key, {}).setdefault("gpus", {})[event.gpu_id] = \
                event.gpu_percent
            return
        node = self.resources.setdefault(key, {})
        node.update(backend=event.backend, node_id=event.node_id,
                    cpu_percent=event.cpu_percent, memory_percent=event.memory_percent,
                    gpu_percent=event.gpu_percent, disk_read_bytes=event.disk_read_bytes,
                    disk_write_bytes=event.disk_write_bytes,
                    net_sent_bytes=event.net_sent_bytes, net_recv_bytes=event.net_recv_bytes)
