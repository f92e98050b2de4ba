"""``Session.start_telemetry`` / ``get_telemetry``: RHAPSODY's telemetry through a provider.

The engine never imports the telemetry (it needs OpenTelemetry): ``rhapsody_lab.telemetry``
registers the ``"telemetry"`` provider (``api.extensions``) and the top package's loader
imports it on first use. The manager it returns reads the session's event stream; for task
fields an event does not carry (executable, exception type) it reads the *task index*: a
dict uid -> task that every later submitted task enters (one C-level update per
``submit_tasks`` call) and that the reader empties as tasks end.
"""

from __future__ import annotations

from typing import Any

from .errors import SessionError
from .extensions import provider

__all__ = ["TelemetryError", "TelemetryHooks"]


class TelemetryError(SessionError, RuntimeError):
    """Telemetry misused (not started, started twice); a RuntimeError, as in RHAPSODY."""


class TelemetryHooks:
    """The telemetry part of ``Session`` (mixed in)."""

    uid: str
    _telemetry: Any = None
    _task_index: dict | None = None

    def _check_open(self) -> None:  # Session's
        raise NotImplementedError

    async def start_telemetry(self, resource_poll_interval: float = 5.0,
                              checkpoint_interval: float | None = None,
                              checkpoint_path: str | None = None,
                              span_processors: list | None = None,
                              metric_readers: list | None = None,
                              resource: Any = None) -> Any:
        """Start telemetry (events, OpenTelemetry spans and metrics, a JSONL checkpoint in
        ``checkpoint_path`` flushed as it goes, snapshots every ``checkpoint_interval`` s)
        and return its ``TelemetryManager``; ``close()`` stops it. Needs the ``telemetry``
        extra. ``span_processors``/``metric_readers`` (OpenTelemetry SDK objects) receive
        everything too, e.g. an OTLP exporter; ``resource`` replaces the SDK resource."""
        self._check_open()
        if self._telemetry is not None:
            raise TelemetryError(f"telemetry of session {self.uid} is already started; "
                                 "use session.get_telemetry()")
        try:
            start = provider("telemetry")
            manager = await start(
                self, resource_poll_interval=resource_poll_interval,
                checkpoint_interval=checkpoint_interval, checkpoint_path=checkpoint_path,
                span_processors=span_processors, metric_readers=metric_readers,
                resource=resource)
        except ImportError as exc:
            self._task_index = None
            raise SessionError(f"telemetry needs the OpenTelemetry SDK ({exc}); install it "
                               "with pip install 'rhapsody-lab[telemetry]'") from exc
        except BaseException:
            self._task_index = None
            raise
        self._telemetry = manager
        return manager

    def get_telemetry(self) -> Any:
        """The running ``TelemetryManager``; ``TelemetryError`` if none was started."""
        if self._telemetry is None:
            raise TelemetryError(f"telemetry of session {self.uid} is not running; call "
                                 "`await session.start_telemetry()` first")
        return self._telemetry

    def task_index(self) -> dict:
        """uid -> task of every task submitted from now on (see the module docstring)."""
        if self._task_index is None:
            self._task_index = {}
        return self._task_index

    def _telemetry_stopped(self, manager: Any) -> None:
        """``manager.stop()`` was called (by hand, or by ``close``): forget it."""
        if self._telemetry is manager:
            self._telemetry = None
            self._task_index = None

    def _telemetry_backend_added(self, backend: Any) -> None:
        """``add_backend``: the running telemetry polls its resources too."""
        if self._telemetry is not None:
            self._telemetry.backend_added(backend)

    async def _stop_telemetry(self, then_close: Any = None) -> None:
        """Stop the telemetry (``close``), then close ``then_close`` (the event stream)."""
        manager, self._telemetry = self._telemetry, None
        try:
            if manager is not None:
                await manager.stop()
        finally:
            self._task_index = None
            if then_close is not None:
                then_close.close()
