"""Data backends: launch and own data infrastructure (a Redis server, a Dragon DDict).

Like RHAPSODY 0.6.0's ``rhapsody.backends.data``: ``await RedisDataBackend()``, then
``backend.endpoints``; a ``Session`` given one shuts it down on ``close()``. Dragon is
imported only when a ``DragonDataBackend`` is made.
"""

from __future__ import annotations

from .base import (
    DataBackend,
    DataBackendError,
    DataBackendNotReadyError,
    DataBackendStartupError,
    DataBackendState,
    DataBackendStateError,
    DataBackendTerminatedError,
    Endpoint,
)
from .dragon import DragonDataBackend, DragonEndpoint
from .redis import RedisDataBackend, RedisEndpoint

__all__ = [
    "DataBackend",
    "DataBackendError",
    "DataBackendNotReadyError",
    "DataBackendStartupError",
    "DataBackendState",
    "DataBackendStateError",
    "DataBackendTerminatedError",
    "DragonDataBackend",
    "DragonEndpoint",
    "Endpoint",
    "RedisDataBackend",
    "RedisEndpoint",
]
