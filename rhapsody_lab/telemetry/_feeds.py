"""The resource side of a TelemetryManager: adapters (pollers), readings as rows, and the
session's journals they are appended to."""

from __future__ import annotations

import logging
import sys
from typing import Any

from . import events as ev

__all__ = ["ResourceFeeds"]

log = logging.getLogger(__name__)


class ResourceFeeds:
    """``register_adapter``, ``backend_added``, ``resource_rows`` (mixed into the manager)."""

    _adapters: list[Any]
    _running: bool
    _session: Any
    _session_id: str
    _fold: Any
    resource_poll_interval: float

    def register_adapter(self, adapter: Any) -> None:
        """An object with ``start()`` and ``stop()`` (e.g. a resource poller) that emits
        through this manager; started with it (at once if already running)."""
        adapter._manager = self
        self._adapters.append(adapter)
        if self._running:
            adapter.start()

    def backend_added(self, backend: Any) -> None:
        """Poll ``backend``'s resources (its Dask workers, or this node once)."""
        from .adapters import ConcurrentTelemetryAdapter, adapter_for
        adapter = adapter_for(backend, self._session_id, self.resource_poll_interval)
        if isinstance(adapter, ConcurrentTelemetryAdapter) and any(
                isinstance(a, ConcurrentTelemetryAdapter) for a in self._adapters):
            return
        self.register_adapter(adapter)

    def _to_journals(self, event: ev.BaseEvent) -> None:
        """Append a reading to the journals of the session (``observe.journal``)."""
        if self._session is None:
            return
        # no import here (a poller thread): importing observe while the loop thread
        # imports it too could meet a partly initialised module; a journal exists only
        # once attach_journal has imported observe.journal
        journal_module = sys.modules.get("rhapsody_lab.observe.journal")
        journals_of = getattr(journal_module, "journals_of", None)
        if journals_of is None:
            return
        try:
            from ._fold import resource_row
            for journal in journals_of(self._session()):
                journal.write_resources([resource_row(event)])
        except Exception:
            log.debug("telemetry: journaling a resource reading failed", exc_info=True)

    def resource_rows(self, since: int = 0) -> tuple[int, list[dict]]:
        """Resource readings from number ``since`` on: ``(next since, rows)``; a row is
        ``{t, node, backend, cpu, memory, gpu_id, gpu}`` (GPU rows: ``gpu_id`` set)."""
        fold = self._fold
        if fold is None:
            return since, []
        rows, dropped = fold.rows, fold.rows_dropped
        start = max(0, since - dropped)
        out = rows[start:]
        return dropped + start + len(out), out

