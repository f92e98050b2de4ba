"""Rich reprs: ``text/html`` and ``text/plain`` for sessions, tasks, task lists, statistics.

Plain functions of the object, so the engine needs no notebook import: they are registered
with IPython's display formatter in ``load_ipython_extension`` (``register``) and can be
attached as ``_repr_html_`` / ``_repr_mimebundle_`` methods. A Session's mimebundle also
carries its live panel widget where widgets render (a Jupyter kernel).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from ..api import BaseBackend, BaseTask, Session
from ..api.states import SHOWN_STATES

__all__ = [
    "backend_html",
    "backend_text",
    "is_statistics",
    "register",
    "session_html",
    "session_mimebundle",
    "session_text",
    "statistics_html",
    "statistics_text",
    "task_html",
    "task_mimebundle",
    "task_text",
    "tasks_html",
    "tasks_text",
    "unregister",
]

_COLORS = {"NEW": "#888", "SUBMITTED": "#888", "QUEUED": "#b8860b", "RUNNING": "#1f77b4",
           "DONE": "#2ca02c", "FAILED": "#d62728", "CANCELED": "#7f7f7f"}
_STATES = SHOWN_STATES
_MAX_ROWS = 20
_STYLE = "font-family: var(--jp-code-font-family, monospace); font-size: 12px"


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _state(state: str) -> str:
    color = _COLORS.get(state, "#000")
    return f'<span style="color:{color};font-weight:bold">{escape(state)}</span>'


def _what(task: Mapping) -> str:
    if task.get("prompt") is not None:
        return f"prompt {_short(task['prompt'], 40)}"
    fn = task.get("function")
    if fn is not None:
        return f"{getattr(fn, '__name__', type(fn).__name__)}()"
    args = " ".join(str(a) for a in task.get("arguments") or ())
    return _short(f"{task.get('executable')} {args}".strip(), 40)


def _result(task: Mapping) -> str:
    state = task.get("state")
    if state == "DONE":
        if task.get("prompt") is not None:
            return _short(task.get("response"))
        if task.get("function") is not None:
            return _short(task.get("return_value"))
        return _short(task.get("stdout") or f"exit {task.get('exit_code')}")
    if state in ("FAILED", "CANCELED"):
        exc = task.get("exception")
        if exc is not None:
            return _short(f"{type(exc).__name__}: {exc}", 80)
        lines = (task.get("stderr") or "").strip().splitlines()
        return _short(lines[-1] if lines else "", 80)
    return ""


# -- tasks -----------------------------------------------------------------------------
def task_text(task: Mapping) -> str:
    """One line: ``ComputeTask task.000001 DONE on concurrent: square() -> 4``."""
    result = _result(task)
    where = f" on {task.get('backend')}" if task.get("backend") else ""
    tail = f" -> {result}" if result else ""
    return f"{type(task).__name__} {task.get('uid')} {task.get('state')}{where}: " \
           f"{_what(task)}{tail}"


def task_html(task: Mapping) -> str:
    rows = [("uid", escape(str(task.get("uid")))), ("state", _state(task.get("state", "?"))),
            ("backend", escape(str(task.get("backend") or "—"))),
            ("runs", escape(_what(task)))]
    result = _result(task)
    if result:
        rows.append(("result" if task.get("state") == "DONE" else "reason", escape(result)))
    source = task.get("source")
    if source:
        rows.append(("source", f"<pre style='margin:0'>{escape(_short(source, 400))}</pre>"))
    body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
                   f"{v}</td></tr>" for k, v in rows)
    return (f"<div style='{_STYLE}'><b>{escape(type(task).__name__)}</b>"
            f"<table>{body}</table></div>")


def task_mimebundle(task: Mapping, include: Any = None, exclude: Any = None) -> dict:
    return {"text/html": task_html(task), "text/plain": task_text(task)}


def _counts(tasks: list[Mapping]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.get("state")] = counts.get(t.get("state"), 0) + 1
    return counts


def tasks_text(tasks: list[Mapping]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in _counts(tasks).items())
    lines = [f"{len(tasks)} tasks ({counts})"]
    lines += [f"  {task_text(t)}" for t in tasks[:_MAX_ROWS]]
    if len(tasks) > _MAX_ROWS:
        lines.append(f"  … {len(tasks) - _MAX_ROWS} more")
    return "\n".join(lines)


def tasks_html(tasks: list[Mapping]) -> str:
    counts = " ".join(f"{_state(s)}&nbsp;{n}" for s, n in _counts(tasks).items())
    head = "".join(f"<th style='text-align:left'>{h}</th>"
                   for h in ("uid", "state", "backend", "runs", "result"))
    rows = "".join(
        f"<tr><td>{escape(str(t.get('uid')))}</td><td>{_state(t.get('state', '?'))}</td>"
        f"<td>{escape(str(t.get('backend') or '—'))}</td><td>{escape(_what(t))}</td>"
        f"<td style='text-align:left'>{escape(_result(t))}</td></tr>"
        for t in tasks[:_MAX_ROWS])
    more = f"<p>… {len(tasks) - _MAX_ROWS} more</p>" if len(tasks) > _MAX_ROWS else ""
    return (f"<div style='{_STYLE}'><b>{len(tasks)} tasks</b> {counts}"
            f"<table><tr>{head}</tr>{rows}</table>{more}</div>")


# -- statistics ------------------------------------------------------------------------
def is_statistics(value: Any) -> bool:
    return isinstance(value, dict) and not isinstance(value, BaseTask) and \
        {"counts", "summary", "latencies", "throughput"} <= value.keys()


def statistics_text(stats: Mapping) -> str:
    s = stats["summary"]
    counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items() if v)
    tp = stats.get("throughput", {})
    return (f"tasks {s['total_tasks']} ({counts or 'none'}); avg total "
            f"{s['avg_total']:.4f}s, queue {s['avg_queue']:.4f}s, exec "
            f"{s['avg_execution']:.4f}s; throughput {tp.get('overall', 0.0):.1f}/s")


def statistics_html(stats: Mapping) -> str:
    s = stats["summary"]
    counts = " ".join(f"{_state(k)}&nbsp;{v}" for k, v in stats["counts"].items() if v)
    lat = stats.get("latencies", {})
    rows = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(
            f"<td>{lat[name].get(q, 0.0):.4f}</td>" for q in ("mean", "p50", "p95", "max"))
        + "</tr>" for name in ("total", "queue", "execution") if name in lat)
    tp = stats.get("throughput", {})
    return (f"<div style='{_STYLE}'><b>{s['total_tasks']} tasks</b> {counts or 'none yet'}"
            f"<br>throughput {tp.get('overall', 0.0):.1f}/s overall, "
            f"{tp.get('recent', 0.0):.1f}/s recent"
            "<table><tr><th>latency (s)</th><th>mean</th><th>p50</th><th>p95</th>"
            f"<th>max</th></tr>{rows}</table></div>")


# -- session ---------------------------------------------------------------------------
def session_text(session: Session) -> str:
    return repr(session)


def session_html(session: Session, stats: Mapping | None = None) -> str:
    """The session's backends, capacity and counts (``stats`` from the loop thread)."""
    state = "closed" if session.closed else "open"
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(type(b).__name__)}</td>"
        f"<td>{escape(_backend_state(b))}</td>"
        f"<td>{_capacity(b)}</td></tr>" for name, b in session.backends.items())
    counts = ""
    if stats is not None:
        counts = " ".join(f"{_state(k)}&nbsp;{v}" for k, v in stats["counts"].items() if v)
    return (f"<div style='{_STYLE}'><b>Session {escape(session.uid)}</b> ({state}) "
            f"{counts}<table><tr><th>backend</th><th>type</th><th>state</th>"
            f"<th>slots</th></tr>{rows}</table></div>")


def _capacity(backend: Any) -> str:
    try:
        return str(backend.capacity())
    except Exception:
        return "?"


def session_mimebundle(session: Session, include: Any = None, exclude: Any = None) -> dict:
    """text/plain and text/html always; the live panel widget when widgets render."""
    from . import _controller_for
    ctl = _controller_for(session)
    if ctl is not None and ctl.widgets:
        from .widgets import panel_for
        return panel_for(ctl, session).mimebundle()
    return {"text/plain": session_text(session), "text/html": session_html(session)}


# -- backends --------------------------------------------------------------------------
def _backend_state(backend: Any) -> str:
    """The backend's state, with its pilot's where it has one (RP: start-up is slow)."""
    state = str(getattr(backend, "backend_state", "?"))
    pilot = getattr(backend, "pilot_state", None)
    return f"{state} (pilot {pilot})" if pilot else state


def backend_text(backend: BaseBackend) -> str:
    state = _backend_state(backend)
    live = len(backend.live_task_states())
    return (f"<{type(backend).__name__} {backend.name} {state} slots={_capacity(backend)} "
            f"live_tasks={live} runs={','.join(sorted(backend.task_kinds))}>")


def backend_html(backend: BaseBackend) -> str:
    rows = [("name", backend.name), ("state", _backend_state(backend)),
            ("slots", _capacity(backend)),
            ("live tasks", str(len(backend.live_task_states()))),
            ("runs", ", ".join(sorted(backend.task_kinds)))]
    body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
                   f"{escape(v)}</td></tr>" for k, v in rows)
    return (f"<div style='{_STYLE}'><b>{escape(type(backend).__name__)}</b>"
            f"<table>{body}</table></div>")


def _backend_plain(backend: Any, p: Any, cycle: bool) -> None:
    p.text(backend_text(backend))


# -- IPython registration --------------------------------------------------------------
def _list_html(value: Any) -> str | None:
    if value and all(isinstance(t, BaseTask) for t in value):
        return tasks_html(value)
    return _own(value, "_repr_html_")


def _dict_html(value: Any) -> str | None:
    return statistics_html(value) if is_statistics(value) else _own(value, "_repr_html_")


def _own(value: Any, method: str) -> Any:
    fn = getattr(type(value), method, None)
    return fn(value) if fn is not None else None


def _task_plain(task: Any, p: Any, cycle: bool) -> None:
    p.text(task_text(task))


def register(shell: Any) -> None:
    """Register the reprs with ``shell``'s display formatter (no engine change needed)."""
    f = shell.display_formatter
    f.mimebundle_formatter.for_type(Session, session_mimebundle)
    html = f.formatters["text/html"]
    html.for_type(BaseTask, task_html)
    html.for_type(BaseBackend, backend_html)
    f.formatters["text/plain"].for_type(BaseBackend, _backend_plain)
    html.for_type(list, _list_html)
    html.for_type(tuple, _list_html)
    html.for_type(dict, _dict_html)
    f.formatters["text/plain"].for_type(BaseTask, _task_plain)


def unregister(shell: Any) -> None:
    f = shell.display_formatter
    for formatter, types in ((f.mimebundle_formatter, (Session,)),
                             (f.formatters["text/html"], (BaseTask, BaseBackend, list,
                                                           tuple, dict)),
                             (f.formatters["text/plain"], (BaseTask, BaseBackend))):
        for t in types:
            try:
                formatter.pop(t)
            except KeyError:
                pass
