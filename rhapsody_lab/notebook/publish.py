"""A kernel announces its live session to the Jupyter server (``rhapsody_lab.server``).

``Publisher(session).start()`` writes the session's registry entry (uid, pid, kernel id,
backends, counts) at once and then about once a second from a daemon thread, and removes
it when the session closes or ``stop()`` is called. When the kernel was started by a
Jupyter server running the ``rhapsody_lab.server`` extension (it puts
``RHAPSODY_LAB_BASE_URL`` in the kernel's environment), the publisher also starts the
session's Bokeh dashboard on a Unix socket in a 0700 directory of this user (no TCP
port: only this user can connect) under the path that server proxies, and publishes the
socket's path. Nothing here blocks the session's loop beyond subscribing the metrics.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..server.registry import (
    ENV_BASE_URL,
    dashboard_prefix,
    entry_key,
    registry_dir,
    remove_entry,
    write_entry,
)

__all__ = ["Publisher", "kernel_id"]


def kernel_id() -> str | None:
    """The id of the Jupyter kernel this runs in (from its connection file), else None."""
    try:
        from ipykernel import get_connection_file
        name = Path(get_connection_file()).name
    except Exception:  # not in a kernel
        return None
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-"):-len(".json")]
    return None


class Publisher:
    """Keeps ``session``'s registry entry current; optionally serves its dashboard."""

    def __init__(self, session: Any, *, directory: str | os.PathLike | None = None,
                 base_url: str | None = None, interval: float = 1.0,
                 plots: list[str] | None = None):
        if not isinstance(interval, int | float) or interval <= 0:
            from ..api.errors import SessionError
            raise SessionError(f"interval must be a number of seconds > 0, got {interval!r}")
        self.session = session
        self.directory = registry_dir(directory)
        self.base_url = os.environ.get(ENV_BASE_URL) if base_url is None else base_url
        self.interval = float(interval)
        self.plots = plots
        self.key = entry_key(os.getpid(), session.uid)
        self.kernel_id = kernel_id()
        self.server: Any = None  # the DashboardServer, once started
        self.dashboard_error: str | None = None
        self._metrics: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def wants_dashboard(self) -> bool:
        return self.base_url is not None

    def start(self) -> Publisher:
        """Publish now and keep publishing. Call on the session's loop (it subscribes)."""
        if self._thread is not None:
            return self
        if self.wants_dashboard:
            try:
                from ..observe.attach import attach_metrics
                self._metrics = attach_metrics(self.session)  # from now on, events count
            except Exception as exc:  # no dashboard extra: the sessions list still works
                self.dashboard_error = f"{type(exc).__name__}: {exc}"
        self.publish()
        self._thread = threading.Thread(target=self._run, name="rhapsody-publish",
                                        daemon=True)
        self._thread.start()
        return self

    def entry(self) -> dict[str, Any]:
        s = self.session
        backends = {name: _backend_entry(b) for name, b in list(s.backends.items())}
        for _ in range(3):
            try:
                counts = s.counts()  # the loop thread may be updating it
                break
            except RuntimeError:
                continue
        else:
            counts = {}
        server = self.server
        return {
            "key": self.key,
            "uid": s.uid,
            "pid": os.getpid(),
            "kernel_id": self.kernel_id,
            "started": getattr(s, "created", None),
            "backends": backends,
            "counts": counts,
            "total": sum(counts.values()),
            "dashboard": None if server is None else {
                "socket": server.socket_path, "prefix": server.prefix,
                "plots": list(server.plots)},
            "dashboard_error": self.dashboard_error,
        }

    def publish(self) -> None:
        """Write the entry now (removed instead once the session is closed)."""
        if self.session.closed:
            remove_entry(self.key, self.directory)
            return
        write_entry(self.entry(), self.directory)

    def _run(self) -> None:
        try:
            if self._metrics is not None:
                self._start_dashboard()
            while not self._stop.is_set() and not self.session.closed:
                try:
                    self.publish()
                except OSError:
                    pass  # a full or vanished directory: try again next tick
                self._stop.wait(self.interval)
        finally:
            remove_entry(self.key, self.directory)
            server, self.server = self.server, None
            if server is not None:
                server.stop()

    def _start_dashboard(self) -> None:
        try:
            from ..dashboard.server import DashboardServer
            self.server = DashboardServer(
                self._metrics, plots=self.plots, unix_socket=True,
                prefix=dashboard_prefix(self.base_url or "/", self.key))
        except Exception as exc:
            self.dashboard_error = f"{type(exc).__name__}: {exc}"
        try:
            self.publish()
        except OSError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """Stop publishing, remove the entry, stop the dashboard server."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        remove_entry(self.key, self.directory)

    def __repr__(self) -> str:
        return f"<Publisher {self.key} -> {self.directory}>"


def _backend_entry(backend: Any) -> dict[str, Any]:
    """A backend as the sidebar lists it: slots, class, state and its pilot's (RP)."""
    try:
        capacity: int | None = int(backend.capacity())
    except Exception:
        capacity = None
    pilot = getattr(backend, "pilot_state", None)
    return {"capacity": capacity, "kind": type(backend).__name__,
            "state": str(getattr(backend, "backend_state", "")) or None,
            "pilot": None if pilot is None else str(pilot)}
