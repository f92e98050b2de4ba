"""Dashboards over ``rhapsody_lab.observe`` metrics (the only package importing Bokeh).

- ``show(session)``: live plots in a notebook (a jupyter_bokeh widget);
- ``serve(session)`` / ``dashboard_urls(session)``: a Bokeh server only its owner reads,
  one app per plot (``task-states``, ``utilisation``, ``throughput``, ``task-stream``,
  ``latency``): on 127.0.0.1 with signed session ids in ``.urls``, or ``unix_socket=True``
  (a 0700 directory; what the Jupyter proxy uses); another address needs ``secret_key``;
- ``write_report(journal_or_session, "report.html")``: a static, offline HTML report.

Importing this package registers ``show`` as the engine's ``"dashboard"`` provider
(``rhapsody_lab.api.extensions``): that is what ``Session.dashboard()`` calls.
"""

from __future__ import annotations

from typing import Any

from ..api import extensions

__all__ = [
    "COMPONENTS",
    "DashboardServer",
    "DashboardWidget",
    "dashboard_urls",
    "main_report",
    "serve",
    "show",
    "write_report",
]


def __getattr__(name: str) -> Any:  # Bokeh is imported only when a name is used
    if name in ("show", "DashboardWidget"):
        from . import notebook
        return getattr(notebook, name)
    if name in ("serve", "dashboard_urls", "DashboardServer"):
        from . import server
        return getattr(server, name)
    if name in ("write_report", "main_report"):
        from . import report
        return getattr(report, name)
    if name == "COMPONENTS":
        from .components import COMPONENTS
        return COMPONENTS
    raise AttributeError(f"module 'rhapsody_lab.dashboard' has no attribute {name!r}")


def _show(session: Any, plots: list[str] | None = None, interval: float = 0.5) -> Any:
    from .notebook import show  # Bokeh: ImportError without the dashboard extra
    return show(session, plots=plots, interval=interval)


extensions.register_provider("dashboard", _show)
