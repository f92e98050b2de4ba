"""Pull (``TelemetryReader``) and push (``TelemetrySubscriber``) views of a manager."""

from .reader import TelemetryReader
from .subscriber import TelemetrySubscriber

__all__ = ["TelemetryReader", "TelemetrySubscriber"]
