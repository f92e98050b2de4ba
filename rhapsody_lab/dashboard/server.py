"""A Bokeh server on 127.0.0.1 with one app per plot, for browsers and JupyterLab panels.

``serve(session)`` starts it on a free port in a daemon thread (its own event loop, so the
session's loop never renders plots) and returns a ``DashboardServer``; ``.urls`` maps
plot name -> URL. Each browser tab gets its own components, refreshed by a periodic
callback that holds them by weak reference (a closed tab frees them).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import weakref
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from ..api.errors import SessionError
from ..observe.metrics import Metrics, attach_metrics
from ..observe.process import RemoteMetrics
from .components import COMPONENTS, Component, refresh

__all__ = ["DashboardServer", "dashboard_urls", "serve"]


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _metrics_of(target: Any) -> Metrics:
    if isinstance(target, Metrics | RemoteMetrics):
        return target
    if hasattr(target, "events") and hasattr(target, "backends"):
        return attach_metrics(target)
    raise SessionError(f"expected a Session or rhapsody_lab.observe.Metrics, got "
                       f"{type(target).__name__}")


def _checked_plots(plots: Iterable[str], interval: Any) -> list[str]:
    """The plot names, checked against COMPONENTS; ``interval`` checked too."""
    plots = list(plots)
    unknown = [p for p in plots if p not in COMPONENTS]
    if unknown:
        raise SessionError(f"unknown plot(s) {unknown}; choose from {list(COMPONENTS)}")
    if not isinstance(interval, int | float) or interval <= 0:
        raise SessionError(f"interval must be a number of seconds > 0, got {interval!r}")
    return plots


def _tick(ref: weakref.ref) -> None:
    component = ref()
    if component is not None:
        try:
            refresh(component.metrics, [component])
        except SessionError:  # the session (and its observer) closed: keep the last plot
            pass


class DashboardServer:
    """One Bokeh server, one app per plot name, on ``address`` (127.0.0.1)."""

    def __init__(self, metrics: Metrics, *, plots: Sequence[str] | None = None,
                 port: int = 0, address: str = "127.0.0.1", interval: float = 0.5,
                 prefix: str = "", allow_websocket_origin: Iterable[str] = ()):
        plots = _checked_plots(plots or COMPONENTS, interval)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise SessionError(f"port must be an integer in 0..65535 (0: any free port), "
                               f"got {port!r}")
        self.metrics = metrics
        self.plots = plots
        self.address = address
        self.interval = float(interval)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._extra_origins = list(allow_websocket_origin)
        self._live: dict[str, weakref.WeakSet] = {p: weakref.WeakSet() for p in plots}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = port or _free_port(address)
        self._thread = threading.Thread(target=self._run, name="rhapsody-dashboard",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise SessionError(f"could not start the dashboard server on {address}:"
                               f"{self.port}: {self._error}") from self._error

    def _make_doc(self, plot: str, doc: Any) -> None:
        component = COMPONENTS[plot](self.metrics)
        component.update()
        self._live[plot].add(component)
        doc.add_root(component.root)
        doc.title = f"rhapsody_lab {plot}"
        doc.add_periodic_callback(partial(_tick, weakref.ref(component)),
                                  int(self.interval * 1000))
        doc._rhapsody_component = component  # the document keeps it alive, not the callback

    def _run(self) -> None:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
        from tornado.ioloop import IOLoop
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            apps = {f"/{p}": Application(FunctionHandler(partial(self._make_doc, p)))
                    for p in self.plots}
            origins = [f"{self.address}:{self.port}", f"localhost:{self.port}",
                       *self._extra_origins]
            self._server = Server(apps, io_loop=IOLoop.current(), port=self.port,
                                  address=self.address, prefix=self.prefix,
                                  allow_websocket_origin=origins)
            self._server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def urls(self) -> dict[str, str]:
        """Plot name -> URL of its app."""
        base = f"http://{self.address}:{self.port}{self.prefix}"
        return {p: f"{base}/{p}" for p in self.plots}

    def components(self, plot: str) -> list[Component]:
        """Live components of ``plot`` (one per open browser session)."""
        return list(self._live[plot])

    def stop(self) -> None:
        """Stop the server and its thread."""
        loop, server = self._loop, self._server
        if loop is None or loop.is_closed():
            return

        def _stop() -> None:
            if server is not None:
                server.stop()
                server.io_loop.stop()
            loop.stop()

        try:
            loop.call_soon_threadsafe(_stop)
        except RuntimeError:
            return
        self._thread.join(10)

    def __repr__(self) -> str:
        return f"<DashboardServer http://{self.address}:{self.port}{self.prefix} {self.plots}>"


_servers: dict[int, tuple[weakref.ref, DashboardServer]] = {}


def serve(target: Any, **options: Any) -> DashboardServer:
    """Start a dashboard server for a Session (or Metrics); ``options`` as for the class."""
    return DashboardServer(_metrics_of(target), **options)


def dashboard_urls(session: Any, **options: Any) -> dict[str, str]:
    """Plot name -> URL, starting one server per session on first call (then reused)."""
    key = id(session)
    hit = _servers.get(key)
    if hit is not None and hit[0]() is session:
        return hit[1].urls
    server = serve(session, **options)
    try:
        ref = weakref.ref(session, lambda _r: _servers.pop(key, (None, server))[1].stop())
    except TypeError:  # a Metrics without weakref support: keep it for the process
        ref = (lambda s: (lambda: s))(session)
    _servers[key] = (ref, server)
    return server.urls
