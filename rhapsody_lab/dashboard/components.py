"""Bokeh dashboard components over ``rhapsody_lab.observe.Metrics``.

Each component is ``source`` + ``root`` + ``update()`` (the dask/distributed pattern):
``update()`` asks the metrics for what changed since its cursor, patches the still-open
newest row and streams new rows with a rollover, so a plot never rebuilds and a browser
never receives more than the new rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure
from bokeh.transform import factor_cmap

from ..api.errors import SessionError
from ..api.states import SHOWN_STATES
from ..observe import HIST_BINS, HIST_LOW, HIST_PER_DECADE
from ..observe.attach import attach_metrics
from ..observe.metrics import STATES, Metrics, hist_range
from ..observe.process import RemoteMetrics
from .base import _FIG, SERIES_COLORS, STATE_COLORS, Component
from .resources import Resources

__all__ = [
    "COMPONENTS",
    "STATE_COLORS",
    "Component",
    "Latency",
    "Resources",
    "TaskStates",
    "TaskStream",
    "Throughput",
    "Utilisation",
    "checked_plots",
    "metrics_of",
]

_SHOWN = SHOWN_STATES


class _Series:
    """Follows ``metrics.series(backend)`` into one source: patch the open row, stream."""

    def __init__(self, metrics: Metrics, backend: str | None, rollover: int | None):
        self.metrics = metrics
        self.backend = backend
        self.rollover = rollover
        self.last: int | None = None
        cols = ["time", *STATES, "started", "finished", "busy", "utilisation"]
        self.source = ColumnDataSource({c: [] for c in cols})

    def requests(self) -> list[tuple[str, str, tuple]]:
        return [("call", "series", (self.backend, self.last))]

    def update(self) -> None:
        first, data = self.metrics.series(self.backend, since=self.last)
        if not data:
            return
        n = len(data["time"])
        src = self.source
        if self.last is not None and first == self.last and len(src.data["time"]):
            row = len(src.data["time"]) - 1
            patch = {k: [(row, v[0])] for k, v in data.items() if src.data[k][row] != v[0]}
            if patch:
                src.patch(patch)
            data = {k: v[1:] for k, v in data.items()}
        if data["time"]:
            src.stream(data, rollover=self.rollover)
        self.last = first + n - 1


class TaskStates(Component):
    """Tasks in each state over time (overall, or one backend)."""

    name = "task-states"

    def __init__(self, metrics: Metrics, backend: str | None = None,
                 rollover: int | None = 2000, **fig: Any):
        self.metrics = metrics
        self._series = _Series(metrics, backend, rollover)
        self.source = self._series.source
        title = "Tasks by state" + (f" ({backend})" if backend else "")
        self.root = figure(title=title, x_axis_type="datetime", name=self.name,
                           **{**_FIG, **fig})
        for state in _SHOWN:
            self.root.line("time", state, source=self.source, color=STATE_COLORS[state],
                           line_width=2, legend_label=state)
        self.root.legend.location = "top_left"
        self.root.legend.click_policy = "hide"
        self.root.yaxis.axis_label = "tasks"
        self.root.add_tools(HoverTool(tooltips=[(s, f"@{s}") for s in _SHOWN]
                                      + [("time", "@time{%T}")],
                                      formatters={"@time": "datetime"}, mode="vline"))

    def requests(self) -> list[tuple[str, str, tuple]]:
        return self._series.requests()

    def update(self) -> None:
        self._series.update()


class Throughput(Component):
    """Tasks started and finished per second (rolling over ``metrics.window``)."""

    name = "throughput"

    def __init__(self, metrics: Metrics, backend: str | None = None,
                 rollover: int | None = 2000, **fig: Any):
        self.metrics = metrics
        self._series = _Series(metrics, backend, rollover)
        self.source = self._series.source
        title = f"Throughput (tasks/s, rolling {metrics.window:g} s)" + \
            (f" ({backend})" if backend else "")
        self.root = figure(title=title, x_axis_type="datetime", name=self.name,
                           **{**_FIG, **fig})
        self.root.line("time", "started", source=self.source, color="#1f77b4",
                       line_width=2, legend_label="started")
        self.root.line("time", "finished", source=self.source, color="#2ca02c",
                       line_width=2, legend_label="finished")
        self.root.legend.location = "top_left"
        self.root.yaxis.axis_label = "tasks/s"

    def requests(self) -> list[tuple[str, str, tuple]]:
        return self._series.requests()

    def update(self) -> None:
        self._series.update()


class Utilisation(Component):
    """Busy slots / capacity over time: one line per backend, and overall (black)."""

    name = "utilisation"
    _palette = SERIES_COLORS

    def __init__(self, metrics: Metrics, rollover: int | None = 2000, **fig: Any):
        self.metrics = metrics
        self.rollover = rollover
        self._overall = _Series(metrics, None, rollover)
        self.source = self._overall.source
        self._per_backend: dict[str, _Series] = {}
        self.root = figure(title="Utilisation (busy slots / capacity)",
                           x_axis_type="datetime", name=self.name,
                           y_range=Range1d(0, 1.05), **{**_FIG, **fig})
        self.root.line("time", "utilisation", source=self.source, color="black",
                       line_width=2, legend_label="all")
        self.root.legend.location = "bottom_left"
        self.root.yaxis.axis_label = "fraction of slots"

    @property
    def sources(self) -> dict[str, ColumnDataSource]:
        """One source per backend (added as backends appear) and ``"all"``."""
        return {"all": self.source, **{n: s.source for n, s in self._per_backend.items()}}

    def requests(self) -> list[tuple[str, str, tuple]]:
        reqs = [*self._overall.requests(), ("attr", "backends", ())]
        for series in self._per_backend.values():
            reqs += series.requests()
        return reqs

    def update(self) -> None:
        self._overall.update()
        backends = self.metrics.backends
        if len(backends) > 1:
            for name in backends:
                if name not in self._per_backend:
                    series = self._per_backend[name] = _Series(self.metrics, name,
                                                               self.rollover)
                    color = self._palette[(len(self._per_backend) - 1) % len(self._palette)]
                    self.root.line("time", "utilisation", source=series.source,
                                   color=color, line_width=1.5, legend_label=name)
            for series in self._per_backend.values():
                series.update()


class TaskStream(Component):
    """One row per slot, one bar per finished task from start to end, coloured by state."""

    name = "task-stream"

    def __init__(self, metrics: Metrics, rollover: int | None = 1000,
                 per_update: int | None = 250, **fig: Any):
        self.metrics = metrics
        self.rollover = rollover
        # at 100,000 tasks/s only the newest bars of each refresh are worth sending
        self.per_update = per_update
        self.cursor = max(0, metrics.rect_index - (rollover or metrics.max_rectangles))
        self.source = ColumnDataSource({k: [] for k in ("start", "end", "y", "row", "uid",
                                                        "backend", "state", "duration")})
        self.root = figure(title="Task stream", x_axis_type="datetime", name=self.name,
                           **{**_FIG, "height": 300, **fig})
        self.root.hbar(y="y", left="start", right="end", height=0.8, source=self.source,
                       color=factor_cmap("state", [STATE_COLORS[s] for s in STATES],
                                         list(STATES)),
                       line_color=None)
        self.root.yaxis.axis_label = "slot"
        self.root.ygrid.grid_line_color = None
        self.root.add_tools(HoverTool(tooltips=[("task", "@uid"), ("state", "@state"),
                                                ("slot", "@row"),
                                                ("duration", "@duration{0.000000} s")]))
        self._nrows = 0

    def _limit(self) -> int | None:
        limits = [n for n in (self.rollover, self.per_update) if n is not None]
        return min(limits) if limits else None

    def requests(self) -> list[tuple[str, str, tuple]]:
        return [("call", "rectangles", (self.cursor, self._limit())), ("call", "rows", ())]

    def update(self) -> None:
        cursor, data = self.metrics.rectangles(self.cursor, self._limit())
        self.cursor = cursor
        if data["start"]:
            self.source.stream(data, rollover=self.rollover)
        rows = self.metrics.rows()
        if len(rows) != self._nrows:
            self._nrows = len(rows)
            self.root.yaxis.ticker = sorted(rows)
            self.root.yaxis.major_label_overrides = {y: label for y, label in rows.items()}


class Latency(Component):
    """Histograms of queue latency and execution time (log-scale buckets)."""

    name = "latency"

    def __init__(self, metrics: Metrics, backend: str | None = None, **fig: Any):
        self.metrics = metrics
        self.backend = backend
        data = metrics.latency(backend) if metrics.backends else None
        if data is None:
            edges = [10.0 ** (HIST_LOW + i / HIST_PER_DECADE) for i in range(HIST_BINS + 1)]
            data = {"left": edges[:-1], "right": edges[1:], "queue": [0] * HIST_BINS,
                    "execution": [0] * HIST_BINS}
        self.source = ColumnDataSource(data)
        self._range = hist_range(data)  # the populated buckets, not 1 µs .. 1e5 s
        self.root = figure(title="Latency distribution", x_axis_type="log", name=self.name,
                           **{**_FIG, "x_range": Range1d(*self._range), **fig})
        self.root.quad(left="left", right="right", bottom=0, top="queue", source=self.source,
                       color="#f2b134", alpha=0.6, legend_label="queue (to RUNNING)")
        self.root.quad(left="left", right="right", bottom=0, top="execution",
                       source=self.source, color="#1f77b4", alpha=0.6,
                       legend_label="execution")
        self.root.xaxis.axis_label = "seconds"
        self.root.yaxis.axis_label = "tasks"
        self.root.legend.location = "top_right"

    def requests(self) -> list[tuple[str, str, tuple]]:
        return [("attr", "backends", ()), ("call", "latency", (self.backend,))]

    def update(self) -> None:
        if not self.metrics.backends:
            return
        data = self.metrics.latency(self.backend)
        patch = {}
        for key in ("queue", "execution"):
            old = self.source.data[key]
            changed = [(i, v) for i, (v, o) in enumerate(zip(data[key], old, strict=True))
                       if v != o]
            if changed:
                patch[key] = changed
        if patch:
            self.source.patch(patch)
            span = hist_range(data)
            if span != self._range:
                self._range = span
                self.root.x_range.start, self.root.x_range.end = span


def refresh(metrics: Any, components: list[Component]) -> None:
    """Update ``components``, fetching what they read in one round trip when remote."""
    prefetch = getattr(metrics, "prefetch", None)
    if prefetch is not None:
        prefetch([r for c in components for r in c.requests()])
    for c in components:
        c.update()


#: Plot name -> component class (the names of the server apps).
COMPONENTS: dict[str, type[Component]] = {
    c.name: c for c in (TaskStates, Utilisation, Throughput, TaskStream, Latency, Resources)}


def checked_plots(plots: Iterable[str], interval: Any) -> list[str]:
    """The plot names, checked against ``COMPONENTS``; ``interval`` (seconds) checked too."""
    plots = list(plots)
    unknown = [p for p in plots if p not in COMPONENTS]
    if unknown:
        raise SessionError(f"unknown plot(s) {unknown}; choose from {list(COMPONENTS)}")
    if not isinstance(interval, int | float) or interval <= 0:
        raise SessionError(f"interval must be a number of seconds > 0, got {interval!r}")
    return plots


def metrics_of(target: Any) -> Metrics | RemoteMetrics:
    """The metrics to plot: ``target`` itself, or the shared metrics of a session."""
    if isinstance(target, Metrics | RemoteMetrics):
        return target
    if hasattr(target, "events") and hasattr(target, "backends"):
        return attach_metrics(target)
    raise SessionError(f"expected a Session or rhapsody_lab.observe.Metrics, got "
                       f"{type(target).__name__}")
