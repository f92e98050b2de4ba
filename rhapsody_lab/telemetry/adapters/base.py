"""What an adapter is: ``start()``/``stop()``, emitting through its manager."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["PollingAdapter", "TelemetryAdapter"]

log = logging.getLogger(__name__)


class TelemetryAdapter(ABC):
    """Emits ``ResourceUpdate`` events through ``self._manager`` (set by
    ``TelemetryManager.register_adapter``); ``stop()`` is safe without ``start()``."""

    _manager: Any = None

    @abstractmethod
    def start(self) -> None:
        """Begin collecting."""

    @abstractmethod
    def stop(self) -> None:
        """Stop collecting."""


class PollingAdapter(TelemetryAdapter):
    """Calls ``poll()`` (a list of events) every ``interval`` seconds on a daemon thread,
    so a slow reading never holds the event loop; the first poll is at once."""

    def __init__(self, session_id: str, backend_name: str, interval: float = 5.0):
        self.session_id = session_id
        self.backend_name = backend_name
        self.interval = float(interval)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failures = 0

    def poll(self) -> list:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # register_adapter started it already
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"rhapsody-resources-{self.backend_name}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, self.interval))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self.poll()
            except Exception:  # a transient reading failure must not end the poller
                self._failures += 1
                if self._failures <= 3:
                    log.warning("resource poll of %s failed", self.backend_name,
                                exc_info=True)
                events = []
            manager = self._manager
            if manager is not None:
                for event in events:
                    manager.emit(event)
            self._stop.wait(self.interval)
