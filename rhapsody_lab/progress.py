"""A plain terminal progress bar fed by the event stream (the notebook has a widget)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .api.states import DONE, TERMINAL_STATES


class TerminalProgress:
    """Counts terminal events of a session and redraws one line at most 10 times a second."""

    def __init__(self, total: int, label: str = "tasks", stream: TextIO | None = None):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.failed = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def __call__(self, batch: Sequence[tuple]) -> None:
        for _t, _uid, state, _b, _s in batch:
            if state in TERMINAL_STATES:
                self.done += 1
                if state != DONE:
                    self.failed += 1
        now = time.monotonic()
        if now - self._last > 0.1 or self.done >= self.total:
            self._last = now
            self.draw()

    def draw(self) -> None:
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = self.done / max(time.monotonic() - self._t0, 1e-9)
        fail = f", {self.failed} not done" if self.failed else ""
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label}{fail} "
                          f"({rate:,.0f}/s)")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
