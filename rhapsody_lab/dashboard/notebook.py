"""The dashboard inside a notebook: a jupyter_bokeh ``BokehModel`` widget that streams.

``show(session)`` returns a ``DashboardWidget``; displaying it renders the plots, and a
timer thread owned by the widget calls every component's ``update()`` (never on the
kernel's event loop: reading metrics must not delay task dispatch; jupyter_bokeh sends
the resulting patches through the kernel's thread-safe IOPub channel). The timer holds
the widget by weak reference: a dropped widget stops.
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from ..api.errors import SessionError
from ..observe.metrics import Metrics
from .components import COMPONENTS, Component, checked_plots, metrics_of, refresh

__all__ = ["DEFAULT_PLOTS", "DashboardWidget", "default_plots", "show"]

DEFAULT_PLOTS = ("task-states", "throughput", "utilisation", "task-stream")


def default_plots(target: Any) -> tuple[str, ...]:
    """``DEFAULT_PLOTS``, and "resources" when ``target``'s telemetry polls its nodes."""
    from .resources import resource_feed
    running = _telemetry_running(target) or bool(resource_feed(target).resource_rows(0)[1])
    return (*DEFAULT_PLOTS, "resources") if running else DEFAULT_PLOTS


def _telemetry_running(target: Any) -> bool:
    ref = getattr(target, "session_ref", None)
    session = ref() if callable(ref) else target
    try:
        session.get_telemetry()
    except Exception:  # not a session, or no telemetry (TelemetryError)
        return False
    return True


class DashboardWidget:
    """Live plots of one session's metrics, as a notebook widget."""

    def __init__(self, metrics: Metrics, plots: Sequence[str] | None = None,
                 interval: float = 0.5, start: bool = True):
        from bokeh.layouts import column
        plots = checked_plots(plots or default_plots(metrics), interval)
        self.metrics = metrics
        self.interval = float(interval)
        self.components: dict[str, Component] = {p: COMPONENTS[p](metrics) for p in plots}
        self.update()
        self.root = column(*(c.root for c in self.components.values()),
                           sizing_mode="stretch_width")
        self._model: Any = None
        self._stopped = threading.Event()
        self.updates = 0
        if start:
            self.start()

    @property
    def model(self) -> Any:
        """The ``jupyter_bokeh.BokehModel`` (created on first use)."""
        if self._model is None:
            from jupyter_bokeh import BokehModel
            self._model = BokehModel(self.root)
        return self._model

    def update(self) -> None:
        """Pull new data into every plot (streams and patches only)."""
        refresh(self.metrics, list(self.components.values()))

    # -- timer ---------------------------------------------------------------------------
    def start(self) -> None:
        """Refresh every ``interval`` seconds until ``stop()`` or the widget is dropped."""
        self._stopped.clear()
        threading.Thread(target=_thread_tick, args=(weakref.ref(self), self._stopped,
                                                    self.interval),
                         daemon=True, name="rhapsody-dashboard-widget").start()

    def stop(self) -> None:
        """Stop refreshing (the plots keep their data)."""
        self._stopped.set()

    def _step(self) -> None:
        self.update()
        self.updates += 1

    # -- display -------------------------------------------------------------------------
    def _summary(self) -> str:
        s = self.metrics.summary()
        counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items()) or "no tasks yet"
        return (f"rhapsody_lab dashboard: {s['total_tasks']} tasks ({counts}); "
                f"backends {s['backends']}")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = {"text/plain": self._summary(),
                  "text/html": f"<pre>{html.escape(self._summary())}</pre>"}
        try:
            bundle.update(self.model._repr_mimebundle_(include=include, exclude=exclude)
                          or {})
        except Exception:  # no widget support here: the text fallbacks remain
            pass
        return bundle

    def __repr__(self) -> str:
        return f"<DashboardWidget {list(self.components)} {self._summary()}>"


def _thread_tick(ref: weakref.ref, stopped: threading.Event, interval: float) -> None:
    next_at = time.monotonic() + interval
    while not stopped.wait(max(0.0, next_at - time.monotonic())):
        next_at = max(next_at + interval, time.monotonic())  # a fixed rate, no drift
        widget = ref()
        if widget is None:
            return
        try:
            widget._step()
        except SessionError:  # the session and its observer are gone: nothing to show
            return
        finally:
            del widget


def show(target: Any, plots: Sequence[str] | None = None, interval: float = 0.5
         ) -> DashboardWidget:
    """Live dashboard of a Session (or Metrics) for a notebook; display the result.

    Metrics are attached to the session on first use (events before that are not seen).
    Without ``plots``: ``DEFAULT_PLOTS``, and "resources" once ``start_telemetry`` runs.
    """
    return DashboardWidget(metrics_of(target), plots=plots, interval=interval)
