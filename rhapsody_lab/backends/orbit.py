"""OrbitExecutionBackend: RHAPSODY's remote-HPC backend through ``radical.orbit``, refusing.

RHAPSODY 0.6.0 sends tasks to a remote node through an ORBIT broker, where an endpoint
runs RHAPSODY's own plugin. Driving that endpoint from here is not built yet: the class
takes RHAPSODY's constructor arguments (validated, errors naming the field), registers as
``"orbit"`` and refuses on ``await backend`` with a ``BackendError`` that says why and what
to use instead, so code written for RHAPSODY fails at start, never half-way through a run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from ..api.backend import BaseBackend
from ..api.errors import BackendError, SessionError

__all__ = ["OrbitExecutionBackend"]


def _orbit_installed() -> bool:
    try:
        return importlib.util.find_spec("radical.orbit") is not None
    except (ImportError, ValueError):
        return False


def _check_positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SessionError(f"OrbitExecutionBackend: {field} must be a positive number of "
                           f"seconds, got {value!r}")


class OrbitExecutionBackend(BaseBackend):
    """Tasks on a remote node through an ORBIT broker (``radical.orbit``); not runnable yet."""

    task_kinds = frozenset({"function", "executable"})

    def __init__(self, broker_url: str | None = None, endpoint_name: str | None = None,
                 backends: list[str] | None = None, name: str = "orbit",
                 participant_name: str | None = None, plugin_name: str = "rhapsody",
                 pool: str | None = None, session_kwargs: dict | None = None,
                 batch_window: float | None = None, batch_limit: int = 1024,
                 start_timeout: float = 30.0, init_timeout: float = 120.0):
        super().__init__(name)
        for field, value in (("broker_url", broker_url), ("endpoint_name", endpoint_name),
                             ("participant_name", participant_name), ("pool", pool)):
            if value is not None and (not isinstance(value, str) or not value):
                raise SessionError(f"OrbitExecutionBackend: {field} must be a non-empty "
                                   f"string or None, got {value!r}")
        if broker_url is not None and not broker_url.startswith(("http://", "https://")):
            raise SessionError(f"OrbitExecutionBackend: broker_url must be an http(s) URL "
                               f"such as 'https://localhost:8000', got {broker_url!r}")
        if not isinstance(plugin_name, str) or not plugin_name:
            raise SessionError(f"OrbitExecutionBackend: plugin_name must be a non-empty "
                               f"string, got {plugin_name!r}")
        if backends is not None and (not isinstance(backends, list) or not backends or
                                     not all(isinstance(b, str) and b for b in backends)):
            raise SessionError(f"OrbitExecutionBackend: backends must be a non-empty list "
                               f"of backend names such as ['dragon_v3'], got {backends!r}")
        if session_kwargs is not None and not isinstance(session_kwargs, dict):
            raise SessionError(f"OrbitExecutionBackend: session_kwargs must be a dict, got "
                               f"{type(session_kwargs).__name__}")
        if batch_window is not None and (isinstance(batch_window, bool) or not isinstance(
                batch_window, (int, float)) or batch_window < 0):
            raise SessionError(f"OrbitExecutionBackend: batch_window must be >= 0 seconds "
                               f"(0: no batching), got {batch_window!r}")
        if isinstance(batch_limit, bool) or not isinstance(batch_limit, int) or batch_limit < 1:
            raise SessionError(f"OrbitExecutionBackend: batch_limit must be an int >= 1, got "
                               f"{batch_limit!r}")
        _check_positive("start_timeout", start_timeout)
        _check_positive("init_timeout", init_timeout)
        self.broker_url = broker_url
        self.endpoint_name = endpoint_name
        self.remote_backends = list(backends or ["dragon_v3"])
        self.plugin_name = plugin_name
        self.pool = pool

    async def _start(self) -> None:
        if not _orbit_installed():
            raise BackendError(self.name, "OrbitExecutionBackend needs radical.orbit (pip "
                               "install 'rhapsody-lab[orbit]'), and even with it rhapsody_lab "
                               "cannot drive an ORBIT endpoint yet")
        raise BackendError(self.name, "rhapsody_lab cannot drive an ORBIT endpoint yet "
                           f"(broker_url={self.broker_url!r}); on an allocation use the "
                           "dask, dragon or flux backend on its nodes instead")

    def capacity(self) -> int:
        return 0

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()  # never running: refuses with the reason above

    async def cancel_task(self, uid: str) -> bool:
        return False
