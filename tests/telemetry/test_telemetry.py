"""Telemetry (RHAPSODY 0.6.0's API) on the session's event stream, against the real
OpenTelemetry SDK: events for every state, one span per task with its status, metrics, a
checkpoint readable mid-run, OTLP export, and the stop on ``session.close()``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the telemetry extra is not installed")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from rhapsody_lab.api import ComputeTask, Session, SessionError
from rhapsody_lab.api.telemetry_hooks import TelemetryError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.telemetry import (
    BaseEvent,
    TaskCompleted,
    TelemetryManager,
    TelemetryReader,
    define_event,
    make_event,
)


def square(x):
    return x * x


def boom():
    raise ValueError("bad input")


def _points(data, name):
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == name for p in m.data.data_points]


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


async def _wait_running(task, timeout=10.0):
    deadline = time.monotonic() + timeout
    while task["state"] != "RUNNING":
        assert time.monotonic() < deadline, task["state"]
        await asyncio.sleep(0.02)


async def test_every_state_gives_its_event_span_and_metric(tmp_path):
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    s = Session([ConcurrentExecutionBackend(max_workers=4)], work_dir=tmp_path, uid="tel")
    tm = await s.start_telemetry(span_processors=[SimpleSpanProcessor(exporter)],
                                 metric_readers=[reader])
    assert s.get_telemetry() is tm and isinstance(tm, TelemetryManager)
    got: list[BaseEvent] = []
    tm.subscribe(got.append)
    seen_async: list[str] = []

    async def on_event(event):
        seen_async.append(event.event_type)
    tm.subscribe(on_event)
    async with s:
        ok = [ComputeTask(function=square, args=(i,)) for i in range(20)]
        bad = ComputeTask(function=boom)
        exe = ComputeTask(executable="/bin/echo", arguments=["hi"])
        slow = ComputeTask(executable="/bin/sleep", arguments=["30"])
        await s.submit_tasks([*ok, bad, exe, slow])
        await s.wait_tasks([*ok, bad, exe])
        await _wait_running(slow)
        counts = tm.task_count()
        assert counts == {"submitted": 23, "completed": 21, "failed": 1, "canceled": 0,
                          "running": 1}
    # close() canceled the sleeping task, then stopped the telemetry with it in
    assert slow["state"] == "CANCELED"
    assert tm.task_count()["canceled"] == 1 and tm.task_count()["running"] == 0
    by_type: dict[str, list] = {}
    for e in got:
        by_type.setdefault(e.event_type, []).append(e)
    for name, n in [("TaskCreated", 23), ("TaskSubmitted", 23), ("TaskQueued", 23),
                    ("TaskStarted", 23), ("TaskCompleted", 21), ("TaskFailed", 1),
                    ("TaskCanceled", 1)]:
        assert len(by_type.get(name, [])) == n, name
    assert set(by_type) >= {"SessionStarted"}  # SessionEnded: after the subscribers' end
    failed = by_type["TaskFailed"][0]
    assert failed.task_id == bad["uid"] and failed.error_type == "ValueError"
    assert failed.attributes["executable"] == "boom"
    assert failed.attributes["task_type"] == "ComputeTask"
    done = {e.task_id: e for e in by_type["TaskCompleted"]}
    assert done[exe["uid"]].attributes["executable"] == "/bin/echo"
    assert all(e.duration_seconds >= 0 and e.session_id == "tel" for e in done.values())
    assert all(e.emit_time >= e.event_time - 1e-3 for e in got)
    assert "TaskCompleted" in seen_async

    spans = exporter.get_finished_spans()  # the user's processor got them all
    assert len(spans) == len(tm.read_traces()) == 24  # 23 tasks + the session
    session_span = next(sp for sp in spans if sp.name == "session")
    tasks = {sp.attributes["task_id"]: sp for sp in spans if sp.name == "task"}
    assert all(sp.parent.span_id == session_span.context.span_id for sp in tasks.values())
    assert {sp.context.trace_id for sp in spans} == {session_span.context.trace_id}
    assert tasks[ok[0]["uid"]].status.status_code == StatusCode.OK
    assert tasks[ok[0]["uid"]].attributes["status"] == "completed"
    assert tasks[bad["uid"]].status.status_code == StatusCode.ERROR
    assert tasks[bad["uid"]].status.description == "ValueError"
    assert tasks[bad["uid"]].attributes["error_type"] == "ValueError"
    assert tasks[slow["uid"]].attributes["status"] == "canceled"
    assert tasks[slow["uid"]].status.status_code == StatusCode.ERROR
    for sp in tasks.values():
        assert sp.start_time <= sp.end_time
        assert [e.name for e in sp.events] == ["TaskQueued"]
    assert session_span.end_time >= max(sp.end_time for sp in tasks.values())

    data = reader.get_metrics_data()  # the user's reader sees the same instruments
    assert sum(p.value for p in _points(data, "tasks_submitted")) == 23
    assert sum(p.value for p in _points(data, "tasks_completed")) == 21
    assert sum(p.value for p in _points(data, "tasks_failed")) == 1
    assert sum(p.value for p in _points(data, "tasks_canceled")) == 1
    hist = _points(data, "task_duration_seconds")
    assert sum(p.count for p in hist) == 23
    assert {p.attributes["backend"] for p in hist} == {"concurrent"}  # no per-task points
    rows = tm.task_spans()
    assert len(rows) == 23 and {r["status"] for r in rows} == {"completed", "failed",
                                                               "canceled"}
    summary = tm.summary()
    assert summary["session_id"] == "tel" and summary["tasks"]["completed"] == 21
    assert summary["duration"]["max_seconds"] >= summary["duration"]["min_seconds"] >= 0
    assert TelemetryReader(tm).read_traces(task_id=bad["uid"])[0].name == "task"
    assert not s._task_index  # dropped with the telemetry


async def test_checkpoint_is_readable_while_the_session_runs(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path,
                       uid="cp") as s:
        tm = await s.start_telemetry(checkpoint_path=tmp_path / "tel",
                                     checkpoint_interval=0.2)
        path = tm.checkpoint_file
        assert path.startswith(str(tmp_path / "tel" / "cp.")) and \
            path.endswith(".telemetry.jsonl")
        quick = [ComputeTask(function=square, args=(i,)) for i in range(5)]
        slow = ComputeTask(executable="/bin/sleep", arguments=["30"])
        await s.submit_tasks([*quick, slow])
        await s.wait_tasks(quick)
        await _wait_running(slow)
        deadline = time.monotonic() + 10
        while True:  # no sync call: the file alone shows the run so far
            rows = _rows(path)
            started = [r for r in rows if r.get("event_type") == "TaskStarted"]
            metrics = [r for r in rows if r["section"] == "metric"]
            spans = [r for r in rows if r["section"] == "span" and r["name"] == "task"]
            if len(started) == 6 and metrics and metrics[-1].get("tasks_completed") == 5 \
                    and len(spans) == 5:
                break
            assert time.monotonic() < deadline, rows[-3:]
            await asyncio.sleep(0.1)
        events = [r for r in rows if r["section"] == "event"]
        assert events[0]["event_type"] == "SessionStarted"
        one = [r for r in events if r["task_id"] == quick[0]["uid"]]
        assert [r["event_type"] for r in one] == ["TaskCreated", "TaskSubmitted",
                                                  "TaskQueued", "TaskStarted",
                                                  "TaskCompleted"]
        assert len({r["span_id"] for r in one}) == 1 and one[0]["span_id"]
        span_rows = {r["attributes"]["task_id"]: r for r in rows if r["section"] == "span"
                     and r["name"] == "task"}
        assert span_rows[quick[0]["uid"]]["span_id"] == one[0]["span_id"]
        assert span_rows[quick[0]["uid"]]["status_code"] == "OK"
        assert metrics[-1]["tasks_running"] == 1
    rows = _rows(path)
    assert [r for r in rows if r["section"] == "event"][-1]["event_type"] == "SessionEnded"
    spans = [r for r in rows if r["section"] == "span"]
    assert len(spans) == len({r["span_id"] for r in spans}) == 7  # each span once
    assert rows[-1]["section"] in ("metric", "span")


async def test_export_as_otlp_writes_valid_otlp_json(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        tm = await s.start_telemetry()
        tasks = [ComputeTask(function=square, args=(2,)), ComputeTask(function=boom)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
    out = tmp_path / "deep" / "trace.json"
    text = tm.export_as_otlp(str(out))
    doc = json.loads(out.read_text())
    assert json.loads(text) == doc
    (rs,) = doc["resourceSpans"]
    res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "rhapsody_lab"}
    spans = rs["scopeSpans"][0]["spans"]
    assert len(spans) == 3
    root = next(sp for sp in spans if sp["name"] == "session")
    for sp in spans:
        assert len(sp["traceId"]) == 32 and len(sp["spanId"]) == 16
        assert int(sp["endTimeUnixNano"]) >= int(sp["startTimeUnixNano"]) > 0
        assert sp["kind"] == 1  # SPAN_KIND_INTERNAL
    task_spans = [sp for sp in spans if sp["name"] == "task"]
    assert {sp["parentSpanId"] for sp in task_spans} == {root["spanId"]}
    codes = sorted(sp["status"]["code"] for sp in task_spans)
    assert codes == [1, 2]  # OK, ERROR
    failed = next(sp for sp in task_spans if sp["status"]["code"] == 2)
    assert failed["status"]["message"] == "ValueError"
    assert failed["events"][0]["name"] == "TaskQueued"


async def test_close_stops_telemetry_and_bad_input_is_refused(tmp_path):
    s = Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path)
    with pytest.raises(TelemetryError, match="start_telemetry") as err:
        s.get_telemetry()
    assert isinstance(err.value, RuntimeError)  # as RHAPSODY raises
    for bad, field in [({"checkpoint_interval": 0}, "checkpoint_interval"),
                       ({"resource_poll_interval": "5"}, "resource_poll_interval"),
                       ({"checkpoint_path": 3}, "checkpoint_path"),
                       ({"span_processors": object()}, "span_processors")]:
        with pytest.raises(SessionError, match=field):
            await s.start_telemetry(**bad)
    tm = await s.start_telemetry()
    with pytest.raises(TelemetryError, match="already started"):
        await s.start_telemetry()
    with pytest.raises(SessionError, match="BaseEvent"):
        tm.emit({"event_type": "x"})
    thread = tm._thread
    await s.close()
    assert not thread.is_alive() and tm._running is False
    with pytest.raises(TelemetryError):
        s.get_telemetry()
    n = len(tm.read_traces())
    tm.emit(make_event(TaskCompleted, session_id=s.uid, backend="x", task_id="late"))
    assert len(tm.read_traces()) == n == 1  # the session span only; late events ignored
    assert tm.session_duration() > 0


async def test_stopping_by_hand_releases_the_session(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path) as s:
        tm = await s.start_telemetry()
        task = ComputeTask(function=square, args=(3,))
        await s.submit_tasks([task])
        await s.wait_tasks([task])
        await tm.stop()
        assert s._task_index is None and tm.task_count()["completed"] == 1
        with pytest.raises(TelemetryError):
            s.get_telemetry()
        again = await s.start_telemetry()  # a new one may start
        late = ComputeTask(function=square, args=(4,))
        await s.submit_tasks([late])
        await s.wait_tasks([late])
        assert again.task_count()["completed"] == 1


async def test_custom_events_are_delivered_and_standalone_manager(tmp_path):
    Checked = define_event("myapp.Checked", score=float, label=(str, "none"))  # noqa: N806 (a class)
    with pytest.raises(ValueError, match="namespaced"):
        define_event("Checked")
    with pytest.raises(ValueError, match="BaseEvent fields"):
        define_event("myapp.Bad", task_id=str)
    tm = TelemetryManager("alone", checkpoint_path=str(tmp_path))
    await tm.start()
    got = []
    tm.subscribe(got.append)
    tm.emit(make_event(Checked, session_id="alone", backend="app", score=0.5))
    tm.emit(make_event(TaskCompleted, session_id="alone", backend="app", task_id="t1",
                       duration_seconds=0.25, attributes={"executable": "x"}))
    assert tm.task_count()["completed"] == 1
    await tm.stop()
    got = [e for e in got if not e.event_type.startswith("Session")]
    assert [e.event_type for e in got] == ["myapp.Checked", "TaskCompleted"]
    assert got[0].score == 0.5 and got[0].label == "none"
    rows = _rows(tm.checkpoint_file)
    custom = next(r for r in rows if r.get("event_type") == "myapp.Checked")
    assert custom["span_id"] and custom["trace_id"]
    assert tm.task_spans()[0]["executable"] == "x"


def test_importing_the_telemetry_does_not_import_opentelemetry():
    code = ("import sys, rhapsody_lab.telemetry, rhapsody_lab.telemetry.events; "
            "print([m for m in sys.modules if m.startswith('opentelemetry')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_without_opentelemetry_start_telemetry_names_the_extra(tmp_path):
    code = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the telemetry extra were not installed
from rhapsody_lab import Session, SessionError
async def main():
    s = Session(work_dir=sys.argv[1])
    try:
        await s.start_telemetry()
    except SessionError as exc:
        print("refused:", exc)
    s.get_statistics()  # the session works on
    await s.close()
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "refused:" in out and "rhapsody-lab[telemetry]" in out
