"""Keep Python's cyclic garbage collector off a large batch while it runs.

A full collection walks every tracked object; with 100,000 submitted tasks (and their
futures) held by the user, each one stalls the event loop for ~50-100 ms, and allocation
during a big run triggers several. The tasks of a big ``submit_tasks`` call are
long-lived by construction, so the session moves the heap into the collector's permanent
generation (``gc.freeze()``, O(1)) when such a call starts and puts it back
(``gc.unfreeze()``, O(1)) once no session has a frozen batch in flight. Objects created
meanwhile are collected as usual; cyclic garbage among frozen objects (a finished task
and its future, once the user drops them) waits until the release. So when big submits
overlap (waves that may never leave the session idle), the session gives the heap back at
the second one and freezes nothing more until it is idle: memory stays bounded, at the
price of the collector's usual pauses during the waves.

The hold is process-wide and counted (several sessions may hold it). A process that
froze the heap itself (a pre-fork server) is left alone: nothing is frozen or unfrozen.
Set ``RHAPSODY_LAB_GC_FREEZE=0`` to switch this off.
"""

from __future__ import annotations

import gc
import os
import threading

__all__ = ["enabled", "hold", "holders", "refreeze", "release"]

_lock = threading.Lock()
_holders: set[int] = set()


def enabled() -> bool:
    """Whether sessions may freeze the heap (``RHAPSODY_LAB_GC_FREEZE`` not ``0``)."""
    return os.environ.get("RHAPSODY_LAB_GC_FREEZE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def hold(owner: object) -> bool:
    """Freeze the heap on behalf of ``owner``; False if this process froze it itself."""
    with _lock:
        if not _holders and gc.get_freeze_count():
            return False  # someone else's freeze: never undo it
        _holders.add(id(owner))
        gc.freeze()
        return True


def refreeze(owner: object) -> None:
    """Move objects created since the hold (a batch's futures) into the frozen set too."""
    with _lock:
        if id(owner) in _holders:
            gc.freeze()


def release(owner: object) -> None:
    """Drop ``owner``'s hold; the last one out unfreezes the heap."""
    with _lock:
        if id(owner) not in _holders:
            return
        _holders.discard(id(owner))
        if not _holders:
            gc.unfreeze()


def holders() -> int:
    """How many owners hold the freeze now (for tests and diagnostics)."""
    return len(_holders)
