"""Resource readings in the journal: ``{"meta": "resources", "t": [...], "node": [...],
...}`` lines (columns ``RESOURCE_KEYS``, percentages; GPU rows have ``gpu_id`` set),
appended by the telemetry's resource poller (``session.start_telemetry``) to every journal
attached to the session, and read back with ``read_resources(path)``."""

from __future__ import annotations

import os
import weakref
from typing import Any

__all__ = ["RESOURCE_KEYS", "journals_of", "read_resources", "track"]

RESOURCE_KEYS = ("t", "node", "backend", "cpu", "memory", "gpu_id", "gpu")
_journals: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> journals


def track(session: Any, journal: Any) -> Any:
    """Remember ``journal`` as one of ``session``'s (``attach_journal`` calls this)."""
    try:
        _journals.setdefault(session, []).append(journal)
    except TypeError:  # a session that takes no weak reference: not tracked
        pass
    return journal


def journals_of(session: Any) -> list:
    """The journals attached to ``session`` and still open."""
    found = _journals.get(session, []) if session is not None else []
    found[:] = [j for j in found if j.open]
    return list(found)


def read_resources(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The resource readings of a journal, as ``RESOURCE_KEYS`` rows, in order."""
    from .journal import _Loaded
    return _Loaded(path).resources
