"""Signalling a process group: a child started in its own session and all it spawned."""

from __future__ import annotations

import os

__all__ = ["signal_group"]


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group already gone (or not
    ours to signal) is left alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
