"""Claims: the uids of each ``submit_tasks`` call until its tasks are with their backends.

A NEW task with a future bound to it is in one claim of this process (any session), so a
second submit of the same task or uid is refused without a pass over the futures.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Claim", "HandOff", "claimed", "clashes", "unclaim"]

claimed: list[Claim] = []


class Claim:
    """The uids of one ``submit_tasks`` call until its tasks are with their backends."""

    __slots__ = ("owner", "session", "tasks", "uids")

    def __init__(self, session: Any, uids: set[str], tasks: list):
        self.session = session
        self.uids = uids
        self.tasks = tasks
        self.owner: HandOff | None = None  # the background hand-off, once it takes over


class HandOff:
    """The part of one big ``submit_tasks`` call not yet handed to its backends."""

    __slots__ = ("claim", "next", "routed", "tasks", "uids")

    def __init__(self, claim: Claim, tasks: list, routed: list):
        self.claim = claim
        self.uids = claim.uids
        self.tasks = tasks
        self.routed = routed
        self.next = 0


def clashes(session: Any, uids: set[str], tasks: list) -> list[Claim]:
    """The claims ``tasks`` collide with: by uid in ``session``, by task object in any."""
    clash = [c for c in claimed if not c.uids.isdisjoint(uids)]
    if clash and any(c.session is not session for c in clash):
        mine = set(map(id, tasks))  # uids are per session: other sessions clash only
        clash = [c for c in clash if c.session is session or  # by the same task objects
                 not mine.isdisjoint(map(id, c.tasks))]
    return clash


def unclaim(claim: Claim) -> None:
    """Drop ``claim`` (a no-op when a closed session's was dropped already)."""
    try:
        claimed.remove(claim)
    except ValueError:
        pass
