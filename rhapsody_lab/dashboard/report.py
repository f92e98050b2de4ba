"""A static HTML report of a finished (or reloaded) session: every plot, one file (the
"resources" plot where telemetry polled the nodes: ``start_telemetry``, journal readings).

The page embeds BokehJS inline, so it opens offline (a login node, an archived run).
``main_report(journal, output)`` is the ``rhapsody-lab report JOURNAL -o report.html`` verb.
"""

from __future__ import annotations

import html
import os
import sys
import time
from typing import Any

from ..api.errors import RhapsodyError, SessionError
from ..observe.journal import load
from ..observe.metrics import Metrics
from ..observe.process import RemoteMetrics
from .components import COMPONENTS
from .resources import Resources

__all__ = ["main_report", "write_report"]

REPORT_PLOTS = ("task-states", "throughput", "utilisation", "latency", "task-stream")


def _metrics(source: Any) -> Metrics:
    if isinstance(source, Metrics | RemoteMetrics):
        return source.sync()
    if isinstance(source, str | os.PathLike):
        return load(source)
    if hasattr(source, "events") and hasattr(source, "backends"):
        from ..observe.attach import attach_metrics
        return attach_metrics(source).sync()
    raise SessionError(f"report source must be a journal path, a Metrics or a Session, "
                       f"got {type(source).__name__}")


def write_report(source: Any, output: str | os.PathLike, *, title: str | None = None) -> str:
    """Write the report of ``source`` (journal path, Metrics or Session) to ``output``."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import Div
    from bokeh.resources import INLINE

    metrics = _metrics(source)
    out = os.fspath(output)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise SessionError(f"report output {out!r}: folder {folder!r} does not exist")
    if title is not None and not isinstance(title, str):
        raise SessionError(f"title must be a string, got {type(title).__name__}")
    title = title or _title(metrics, source)
    s = metrics.summary()
    counts = ", ".join(f"{k}: {v}" for k, v in s["counts"].items()) or "no tasks"
    info = (f"<h2>{html.escape(title)}</h2><p>{s['total_tasks']} tasks ({html.escape(counts)})"
            f" over {s['span']:.3f} s on {html.escape(', '.join(s['backends']) or '-')}; "
            f"capacity {html.escape(str(s['capacity']))}; "
            f"throughput {s['throughput']:.1f} tasks/s; queue p50 {s['queue_p50']:.3g} s, "
            f"execution p50 {s['execution_p50']:.3g} s</p>")
    comps = []
    for name in REPORT_PLOTS:
        cls = COMPONENTS[name]
        kw = {} if name == "latency" else {"rollover": None}
        if name == "task-stream":
            kw["per_update"] = None
        comp = cls(metrics, **kw)
        comp.update()
        comps.append(comp)
    resources = Resources(metrics, rollover=None)  # only where telemetry polled the nodes
    resources.update()
    if not resources.waiting:
        comps.append(resources)
    layout = column(Div(text=info, sizing_mode="stretch_width"),
                    *(c.root for c in comps), sizing_mode="stretch_width")
    page = file_html(layout, INLINE, title)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out


def _title(metrics: Any, source: Any) -> str:
    """``Session <uid> · <date of its first event> UTC`` (what a reader looks for first)."""
    meta = getattr(metrics, "meta", None) or {}
    uid = meta.get("session") or getattr(source, "uid", None)
    when = getattr(metrics, "first_time", None) or meta.get("created") \
        or getattr(source, "created", None)
    name = f"Session {uid}" if uid else "rhapsody_lab session"
    if isinstance(when, int | float):
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
        return f"{name} \u00b7 {stamp} \u00b7 rhapsody_lab report"
    return f"{name} \u00b7 rhapsody_lab report"


def main_report(journal: str, output: str) -> int:
    """CLI verb: write the report of ``journal`` to ``output``; returns the exit code."""
    try:
        path = write_report(journal, output)
    except RhapsodyError as exc:
        print(f"rhapsody-lab report: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rhapsody-lab report: cannot write {output!r}: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
