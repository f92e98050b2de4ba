"""What every dashboard component shares: the ``Component`` shape, figure defaults, colours."""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource

__all__ = ["SERIES_COLORS", "STATE_COLORS", "Component"]

STATE_COLORS = {"SUBMITTED": "#9e9e9e", "QUEUED": "#f2b134", "RUNNING": "#1f77b4",
                "DONE": "#2ca02c", "FAILED": "#d62728", "CANCELED": "#9467bd",
                "NEW": "#cccccc"}
SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_FIG = {"sizing_mode": "stretch_width", "height": 260, "toolbar_location": "above",
        "tools": "pan,wheel_zoom,box_zoom,reset,save"}


class Component:
    """A plot: ``source`` (its data), ``root`` (the Bokeh model), ``update()`` (pull what
    is new into ``source``: streams and patches, never a rebuild)."""

    name = "component"
    source: ColumnDataSource
    root: Any
    metrics: Any = None

    def requests(self) -> list[tuple[str, str, tuple]]:
        """The metrics reads the next ``update()`` makes (for one batched fetch)."""
        return []

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError
