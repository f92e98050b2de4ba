"""NoopExecutionBackend: completes every task without running it (engine overhead).

What RHAPSODY's backend of the same name does: each task ends DONE with
``return_value=True``, empty ``stdout``/``stderr`` and ``exit_code=0``. Here the tasks take
the same path as a real backend's (QUEUED on submit, then one outcome record per
``submit_tasks`` call through the drain), so tasks/s on it measures the engine alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..api.backend import DONE_RUN, BaseBackend

__all__ = ["NoopExecutionBackend"]

_RESULT = {"return_value": True, "stdout": "", "stderr": "", "exit_code": 0}


class NoopExecutionBackend(BaseBackend):
    """Every task ends DONE at once, nothing runs; for benchmarks of the engine."""

    task_kinds = frozenset({"function", "executable", "ai"})

    def __init__(self, name: str = "noop"):
        super().__init__(name)

    async def _start(self) -> None:
        """Nothing to start."""

    def capacity(self) -> int:
        return 1

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        tasks = list(tasks)
        if not tasks:
            return
        self._accept(tasks)
        for task in tasks:
            task.update(_RESULT)
        now = time.time()
        times = [now] * len(tasks)
        # one record for the whole call, applied by the drain on a later loop iteration
        # (a cancel before then wins: the drain leaves a CANCELED task as it is)
        self._done.append((tasks, DONE_RUN, (times, times), 0))
        self._wake_drain()

    async def cancel_task(self, uid: str) -> bool:
        task = self._live.get(uid)
        if not self._cancel_unstarted(uid):
            return False  # already DONE (or not here)
        task.update(return_value=None, exit_code=None)  # it never "ran"
        return True
