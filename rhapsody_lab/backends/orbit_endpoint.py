"""An ORBIT endpoint whose ``rhapsody`` plugin runs tasks on rhapsody_lab's engine.

``radical.orbit`` ships the endpoint side of RHAPSODY's remote backend: the ``rhapsody``
plugin (``radical.orbit.plugin_rhapsody``), whose sessions drive the ``rhapsody`` package.
Here the same plugin (its routes, wire format and notifications, so any RHAPSODY or
rhapsody_lab ``OrbitExecutionBackend`` can use it) is served with its sessions built on
rhapsody_lab: the remote session's backends come from ``rhapsody_lab.get_backend`` and
its tasks run in a rhapsody_lab ``Session``.

Run it on the node that should execute the tasks::

    python -m rhapsody_lab.backends.orbit_endpoint --url https://broker:8000 \\
        --cert broker_cert.pem --token "$TOKEN" --name my-node

It prints ``ready <name>`` once registered with the broker and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
import weakref
from typing import Any

from radical.orbit import EndpointRuntime
from radical.orbit import plugin_rhapsody as _orbit_rh

from .. import BaseTask, Session
from ..api.errors import BackendError
from .registry import get_backend

__all__ = ["LabRhapsodyPlugin", "LabRhapsodySession", "close_sessions", "main", "serve"]

log = logging.getLogger(__name__)

if _orbit_rh.rh is None:
    # ORBIT's session refuses to exist without an engine module bound to ``rh``; every
    # method of it that calls the engine is overridden below, so any engine will do.
    import rhapsody_lab as _engine
    _orbit_rh.rh = _engine


class LabRhapsodySession(_orbit_rh.RhapsodySession):
    """ORBIT's rhapsody session, its tasks run by a rhapsody_lab ``Session``."""

    #: sessions initialised and not closed yet (closed when the endpoint stops)
    live: weakref.WeakSet[LabRhapsodySession] = weakref.WeakSet()

    async def initialize(self) -> None:
        """Start the requested backends and the session; an error fails the session."""
        backends: list = []
        try:
            for name in self.backend_names:
                backend = get_backend(name)
                backends.append(backend)
                await backend
            self._rh_session = Session(backends, uid=self._sid)
            self._loop = asyncio.get_running_loop()
            LabRhapsodySession.live.add(self)
            self._notified_states: dict[str, str] = {}
            self._notified_lock = threading.Lock()
            for backend in backends:  # RUNNING (and QUEUED) reach the client as events
                backend.register_callback(self._on_task_state_change)
            self._init_ready.set()
        except Exception as exc:
            for backend in backends:
                await backend.shutdown()
            self._init_error = str(exc) if not isinstance(exc, BackendError) else exc.args[0]
            self._init_ready.set()
            raise

    async def close(self) -> dict:
        LabRhapsodySession.live.discard(self)
        return await super().close()

    def _prepare_batch(self, task_dicts: list[dict]) -> list:
        return [BaseTask.from_dict(self._deserialize_task(td)) for td in task_dicts]

    def _task_future(self, uid_str: str, task: Any) -> asyncio.Future:
        """A future that settles (never raises) when ``task`` ends."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        fut = getattr(task, "future", None)
        if fut is None or fut.done():
            waiter.set_result(None)
        else:
            fut.add_done_callback(lambda _f: waiter.done() or waiter.set_result(None))
        return waiter


class LabRhapsodyPlugin(_orbit_rh.PluginRhapsody):
    """ORBIT's ``rhapsody`` plugin with rhapsody_lab sessions; served wherever it is asked."""

    session_class = LabRhapsodySession

    @classmethod
    def is_enabled(cls, app: Any) -> bool:
        return True


def serve(url: str, name: str, cert: str | None = None, token: str | None = None,
          timeout: float = 30.0) -> EndpointRuntime:
    """Connect an endpoint serving ``LabRhapsodyPlugin`` to the broker at ``url``."""
    runtime = EndpointRuntime(broker_url=url, cert=cert, token=token, name=name,
                              role="endpoint")
    runtime.serve(LabRhapsodyPlugin)
    try:
        runtime.start(wait=True, timeout=timeout)
        if not runtime.wait_registered(timeout=0):
            raise RuntimeError(f"endpoint {name!r} did not register with the ORBIT broker "
                               f"{url} within {timeout} s")
    except BaseException:
        runtime.stop()
        raise
    return runtime


def close_sessions(timeout: float = 10.0) -> None:
    """Close every live session (ending its tasks' processes), each on its own loop."""
    for session in list(LabRhapsodySession.live):
        loop = getattr(session, "_loop", None)
        if loop is None or not loop.is_running():
            continue
        try:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout)
        except Exception as exc:  # best effort: the endpoint is stopping anyway
            log.warning("closing ORBIT session %s failed: %s", session.sid, exc)


def main(argv: list[str] | None = None) -> int:
    """Command line: serve until SIGTERM/SIGINT, exit 1 if the broker link is lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="broker URL, https://host:port")
    parser.add_argument("--name", required=True, help="endpoint name clients target")
    parser.add_argument("--cert", help="the broker's TLS certificate (pinned)")
    parser.add_argument("--token", help="the broker's ingress token")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to register with the broker")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime = serve(args.url, args.name, args.cert, args.token, args.timeout)
    except Exception as exc:
        print(f"orbit endpoint {args.name}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"ready {args.name}", flush=True)
    code = 0
    try:
        while not stop.wait(0.5):
            if runtime.fatal:
                print(f"orbit endpoint {args.name}: {runtime.fatal_reason}",
                      file=sys.stderr, flush=True)
                code = 1
                break
    finally:
        close_sessions()
        runtime.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
