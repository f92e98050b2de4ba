"""Task state names as an enum, at RHAPSODY's import path (``rhapsody.backends.constants``).

``TasksMainStates.DONE.value == "DONE"``; a member compares equal to its name (``str``
enum), so ``task.state == TasksMainStates.DONE`` holds. RHAPSODY's ``StateMapper`` (its
per-backend state translation) has no counterpart: every backend here reports these states.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TasksMainStates"]


class TasksMainStates(str, Enum):
    """The task states of ``api.states.STATES``, in the same order."""

    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

