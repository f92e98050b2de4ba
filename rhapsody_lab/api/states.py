"""Task states: ``NEW → SUBMITTED → QUEUED → RUNNING → DONE | FAILED | CANCELED``.

States are plain strings so that ``task.state == "DONE"`` works; a backend may skip states
it cannot see but never reorders them, and terminal states are final.
"""

from __future__ import annotations

__all__ = [
    "CANCELED",
    "DONE",
    "FAILED",
    "NEW",
    "QUEUED",
    "RUNNING",
    "SHOWN_STATES",
    "STATES",
    "SUBMITTED",
    "TERMINAL_STATES",
    "state_rank",
]

NEW = "NEW"
SUBMITTED = "SUBMITTED"
QUEUED = "QUEUED"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
CANCELED = "CANCELED"

STATES: tuple[str, ...] = (NEW, SUBMITTED, QUEUED, RUNNING, DONE, FAILED, CANCELED)
TERMINAL_STATES: frozenset[str] = frozenset({DONE, FAILED, CANCELED})
#: The states a submitted task is seen in, in display order (widgets, plots, tables).
SHOWN_STATES: tuple[str, ...] = STATES[1:]
_RANK = {s: i for i, s in enumerate(STATES[:5])} | {FAILED: 4, CANCELED: 4}


def state_rank(state: str) -> int:
    """Position of ``state`` in the life cycle (terminal states share the last rank)."""
    return _RANK[state]
