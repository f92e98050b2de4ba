"""Push view of a TelemetryManager."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TelemetrySubscriber"]


class TelemetrySubscriber:
    """``subscribe(callback)``: every later event to ``callback`` (plain or ``async``)."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def subscribe(self, callback: Callable[[Any], Any]) -> None:
        self._manager.subscribe(callback)
