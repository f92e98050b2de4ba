"""The "resources" plot: CPU and memory of each node (and each GPU) over time, in percent.

Readings come from the telemetry's resource pollers (``session.start_telemetry``: this
node through psutil, a Dask backend's worker hosts from its scheduler, GPUs through NVML
where one exists) or, for a finished session, from its journal (``read_resources``).
``resource_feed(target)`` finds them for whatever the other plots are built from: a
session, its metrics (``attach_metrics`` keeps a weak reference to the session), a
journal's ``load()``-ed metrics or path, a ``TelemetryManager``.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from bokeh.models import ColumnDataSource, HoverTool, Label, Range1d
from bokeh.plotting import figure

from ..api.errors import SessionError
from .base import _FIG, SERIES_COLORS, Component

__all__ = ["WAITING_TITLE", "Resources", "resource_feed"]

TITLE = "Resources (% per node)"
WAITING_TITLE = "Resources: no readings yet (await session.start_telemetry())"


class _Rows:
    """A fixed list of readings (a journal's)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def resource_rows(self, since: int = 0) -> tuple[int, list[dict[str, Any]]]:
        return len(self.rows), self.rows[since:]


class _SessionFeed:
    """The readings of a session's telemetry, whenever it runs: started after the plot,
    it is picked up on the next ``update()``; a session gone or closed gives nothing new."""

    def __init__(self, session: Any):
        self._session = weakref.ref(session)
        self._manager: Any = None

    def resource_rows(self, since: int = 0) -> tuple[int, list[dict[str, Any]]]:
        session = self._session()
        if session is None:
            return since, []
        try:
            manager = session.get_telemetry()
        except SessionError:  # TelemetryError: not started (yet), or stopped
            return since, []
        if manager is not self._manager:  # a new manager counts its readings from 0
            self._manager, since = manager, 0
        return manager.resource_rows(since)


def resource_feed(target: Any) -> Any:
    """Something with ``resource_rows(since) -> (next since, rows)`` for ``target``."""
    if callable(getattr(target, "resource_rows", None)):
        return target
    if isinstance(target, str | os.PathLike):
        from ..observe.journal import read_resources
        return _Rows(read_resources(target))
    if callable(getattr(target, "get_telemetry", None)):
        return _SessionFeed(target)
    ref = getattr(target, "session_ref", None)  # metrics attached to a session
    if callable(ref):
        session = ref()
        return _SessionFeed(session) if session is not None else _Rows([])
    path = getattr(target, "path", None)  # metrics load()-ed from a journal
    if isinstance(path, str) and os.path.isfile(path):
        from ..observe.journal import read_resources
        return _Rows(read_resources(path))
    from ..observe.metrics import Metrics
    from ..observe.process import RemoteMetrics
    if isinstance(target, Metrics | RemoteMetrics):
        return _Rows([])  # metrics of no session: nothing polled their nodes
    raise SessionError(f"Resources needs a session, its metrics, a journal path or a "
                       f"TelemetryManager, got {type(target).__name__}")


class Resources(Component):
    """CPU and memory of each node, and each GPU, over time (percent).

    ``source`` streams every reading as a ``(time, series, value)`` row; each series
    (``"<node> cpu"``, ``"<node> memory"``, ``"<node> gpu0"``) gets its own line (its
    source in ``lines``), so GPU lines exist only where a GPU reported. On a Dask backend
    the nodes are its workers' hosts (their figures from the Dask scheduler).
    """

    name = "resources"

    def __init__(self, target: Any, rollover: int | None = 5000, **fig: Any):
        self.feed = resource_feed(target)
        self.rollover = rollover
        self._since = 0
        self.source = ColumnDataSource({"time": [], "series": [], "value": []})
        self.lines: dict[str, ColumnDataSource] = {}
        self.root = figure(title=WAITING_TITLE, x_axis_type="datetime", name=self.name,
                           y_range=Range1d(0, 105), **{**_FIG, **fig})
        self.root.yaxis.axis_label = "percent"
        # until the first line: a note in the plot (and Bokeh does not warn, in the
        # kernel's output, of a plot without renderers)
        self.note = Label(x=12, y=50, x_units="screen", text="waiting for resource readings",
                          text_color="#757575", text_font_size="13px")
        self.root.add_layout(self.note)
        self.root.add_tools(HoverTool(tooltips=[("series", "$name"), ("value", "@value{0.0}"),
                                                ("time", "@time{%T}")],
                                      formatters={"@time": "datetime"}))

    @property
    def waiting(self) -> bool:
        """No reading has arrived yet."""
        return not self.lines

    def update(self) -> None:
        self._since, rows = self.feed.resource_rows(self._since)
        table: dict[str, list] = {"time": [], "series": [], "value": []}
        per: dict[str, dict[str, list]] = {}
        for r in rows:
            ms = r["t"] * 1000.0
            if r.get("gpu_id") is None:
                pairs = [(f"{r['node']} cpu", r.get("cpu")),
                         (f"{r['node']} memory", r.get("memory"))]
            else:
                pairs = [(f"{r['node']} gpu{r['gpu_id']}", r.get("gpu"))]
            for series, value in pairs:
                if value is None:
                    continue
                table["time"].append(ms)
                table["series"].append(series)
                table["value"].append(value)
                line = per.setdefault(series, {"time": [], "value": []})
                line["time"].append(ms)
                line["value"].append(value)
        if not table["time"]:
            return
        self.source.stream(table, rollover=self.rollover)
        for series, data in per.items():
            src = self.lines.get(series)
            if src is None:
                src = self.lines[series] = ColumnDataSource({"time": [], "value": []})
                color = SERIES_COLORS[(len(self.lines) - 1) % len(SERIES_COLORS)]
                self.root.line("time", "value", source=src, color=color, line_width=2,
                               legend_label=series, name=series)
                self.root.legend.location = "top_left"
                self.root.legend.click_policy = "hide"
                self.root.title.text = TITLE
                self.note.visible = False
            src.stream(data, rollover=self.rollover)
