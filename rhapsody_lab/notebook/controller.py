"""The notebook's session controller: what the magics and the panel buttons act on.

One ``Controller`` per IPython shell owns at most one open ``Session``, the loop it runs on
(``Host``), the tasks submitted from magics, and a ``Tracker`` fed by the session's event
stream. Everything that touches the session runs on the loop thread; cells only schedule.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..api import BaseTask, Session
from ..api.errors import SessionError
from ..api.states import CANCELED, DONE, FAILED
from .loop import Host, Pending

__all__ = ["BACKEND_KINDS", "Controller", "Tracker", "make_backend"]

#: ``%rhapsody start --backend`` choices -> what they build
BACKEND_KINDS = {
    "concurrent": "a thread pool (ConcurrentExecutionBackend), named 'concurrent'",
    "threads": "a thread pool (ConcurrentExecutionBackend), named 'threads'",
    "processes": "a process pool (ConcurrentExecutionBackend(ProcessPoolExecutor))",
    "dask": "a Dask LocalCluster (DaskExecutionBackend)",
    "flux": "a Flux instance (FluxExecutionBackend): $FLUX_URI's, else `flux start "
            "--test-size=N` (N = --workers, default 1)",
    "radical": "a RADICAL-Pilot pilot on local.localhost (RadicalExecutionBackend) of "
               "--workers cores, with raptor for functions; prints the pilot's start-up",
}
_TERMINAL = (DONE, FAILED, CANCELED)  # in the order the widget shows them
_PROGRESS_AFTER = 0.3  # a wait shorter than this shows no progress bar


def make_backend(kind: str, workers: int | None) -> Any:
    """Build one backend for ``%rhapsody start --backend kind --workers N``."""
    from ..backends.concurrent import ConcurrentExecutionBackend
    if kind in ("concurrent", "threads"):
        return ConcurrentExecutionBackend(name=kind, max_workers=workers)
    if kind == "processes":
        return ConcurrentExecutionBackend(ProcessPoolExecutor(max_workers=workers or 2),
                                          name="processes")
    if kind == "dask":
        try:
            from ..backends import DaskExecutionBackend
        except ImportError as exc:
            raise SessionError(f"the dask backend is not available here ({exc}); install "
                               "rhapsody-lab[dask] or use --backend concurrent") from None
        return DaskExecutionBackend(resources={"n_workers": workers or 2,
                                               "threads_per_worker": 1,
                                               "dashboard_address": ":0"})
    if kind == "flux":
        from ..backends.flux import FluxExecutionBackend
        return FluxExecutionBackend(test_size=workers or 1)
    if kind == "radical":
        from ..backends.radical_pilot import DEFAULT_RAPTOR, RadicalExecutionBackend
        return RadicalExecutionBackend({"cores": workers or os.cpu_count() or 1},
                                       DEFAULT_RAPTOR, progress=print)
    raise SessionError(f"unknown backend {kind!r}; choose from {sorted(BACKEND_KINDS)}")


class Tracker:
    """Inline event subscriber: tasks seen and finished, O(1) per event, on the loop."""

    def __init__(self, session: Session):
        stats = session.get_statistics()  # baseline: tasks submitted before we subscribed
        counts = stats["counts"]
        self.submitted = stats["summary"]["total_tasks"]
        self.finished = {s: counts.get(s, 0) for s in _TERMINAL}
        self.changed = 0  # bumps on every batch (widgets redraw only when it moved)
        session.subscribe(self, inline=True)

    @property
    def done(self) -> int:
        return sum(self.finished.values())

    @property
    def live(self) -> int:
        # a task canceled before its hand-off ends without SUBMITTED: clamp at 0
        return max(self.submitted - self.done, 0)

    def __call__(self, batch: Sequence[tuple]) -> None:
        finished = self.finished
        for _t, _uid, state, _b, _s in batch:
            if state == "SUBMITTED":
                self.submitted += 1
            elif state in finished:
                finished[state] += 1
        self.changed += 1


class Controller:
    """The session of one IPython shell and the operations the magics offer on it."""

    def __init__(self, shell: Any = None, host: Host | None = None):
        self.shell = shell
        self._host = host
        self._previous_runner: Any = None
        if host is None and not self.widgets:
            _ = self.host  # a terminal: the background loop and its runner, before any cell
        self.session: Session | None = None
        self.tracker: Tracker | None = None
        self.tasks: list[BaseTask] = []
        self.start_error: BaseException | None = None
        self.panels: list[Any] = []  # session panels to stop when the session stops
        self.publisher: Any = None  # announces the session to the Jupyter server (publish)

    @property
    def host(self) -> Host:
        """The loop the session runs on, found at first use: inside a cell, a kernel's
        loop is running (an extension loaded at kernel start-up runs before it does)."""
        if self._host is None:
            self._host = Host.detect() if self.widgets else Host.background()
            if self._host.mode == "thread" and self.shell is not None:
                # a terminal: top-level `await` must run on the loop the session runs on
                self._previous_runner = self.shell.loop_runner
                self.shell.loop_runner = self._host.runner
        return self._host

    @property
    def widgets(self) -> bool:
        """Whether ipywidgets render here (a Jupyter kernel, not a terminal)."""
        return getattr(self.shell, "kernel", None) is not None

    # -- life cycle --------------------------------------------------------------------
    def start(self, kinds: Sequence[str], workers: int | None = None,
              uid: str | None = None, inference: str | None = None) -> Pending:
        """Create the session now and initialise its backends on the loop."""
        if self.session is not None and not self.session.closed:
            raise SessionError(f"session {self.session.uid} is already running; "
                               "`%rhapsody stop` it first")
        backends = [make_backend(k, workers) for k in dict.fromkeys(kinds)]
        if inference is not None:
            from ..backends import VllmInferenceBackend
            backends.append(VllmInferenceBackend(endpoint=inference))
        session = Session(backends, uid=uid)
        self.session, self.tasks, self.start_error = session, [], None
        self.tracker = None

        async def start() -> None:
            self.tracker = Tracker(session)
            try:
                await session.start()
            except BaseException as exc:
                self.start_error = exc
                raise
            self._publish(session)

        return self.host.spawn(start())

    def attach(self, session: Session) -> None:
        """Adopt a session built in a cell (``%rhapsody status`` etc. then act on it)."""
        if not isinstance(session, Session):
            raise SessionError(f"expected a Session, got {type(session).__name__}")
        self.session, self.tasks, self.start_error = session, [], None
        self.tracker = self.host.call(lambda: Tracker(session))
        self.host.call(lambda: self._publish(session))

    def _publish(self, session: Session) -> None:
        """On the loop: list the session in the Jupyter server's sidebar (in a kernel)."""
        self._unpublish()
        if not self.widgets:
            return  # a terminal: no Jupyter server to show it
        try:
            from .publish import Publisher
            self.publisher = Publisher(session).start()
        except Exception as exc:  # the sidebar is optional; the session is not
            print(f"%rhapsody: session not announced to the Jupyter server: {exc}",
                  file=sys.stderr)

    def _unpublish(self) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.stop()

    def require(self) -> Session:
        s = self.session
        if s is None:
            raise SessionError("no session yet: run `%rhapsody start` first")
        if s.closed:
            raise SessionError(f"session {s.uid} is stopped: `%rhapsody start` a new one")
        return s

    def stop(self) -> Pending:
        session = self.require()

        async def stop() -> str:
            try:
                await session.close()
                return session.uid
            finally:
                if self.publisher is not None:  # joins its thread: not on the loop
                    await asyncio.get_running_loop().run_in_executor(None, self._unpublish)
                for panel in self.panels:
                    panel.refresh()
                    panel.stop_timer()
                self.panels.clear()

        return self.host.spawn(stop())

    def shutdown(self) -> None:
        """Unload: close the session (best effort) and the background loop."""
        if self._host is None:
            return
        if self._previous_runner is not None:
            self.shell.loop_runner = self._previous_runner
        if self.session is not None and not self.session.closed:
            pending = self.stop()
            if not self.host.on_loop_thread():
                try:
                    pending.result(30)
                except Exception:
                    pass
        self.host.close()

    # -- submission --------------------------------------------------------------------
    def submit(self, tasks: list[BaseTask]) -> Pending:
        """Submit without waiting for the tasks to run.

        On the kernel's loop the submission is scheduled (it binds every task's future in
        its first step, before the next cell runs); from another thread (a terminal) this
        waits for ``submit_tasks`` itself, which returns as soon as the tasks are accepted.
        """
        session = self.require()
        for task in tasks:
            _precheck(session, task)
        self.tasks.extend(tasks)
        pending = self.host.spawn(session.submit_tasks(tasks))
        if self.host.on_loop_thread():
            pending.future.add_done_callback(_report_submit_error)
        else:
            pending.result(60)
        return pending

    # -- waiting -----------------------------------------------------------------------
    def wait(self, tasks: list[BaseTask] | None, timeout: float | None,
             progress: Callable[[int, int], Any] | None = None) -> Pending:
        """Wait for ``tasks`` (None: every task of the session), showing progress."""
        session = self.require()
        return self.host.spawn(self._wait(session, tasks, timeout, progress))

    async def _wait(self, session: Session, tasks: list[BaseTask] | None,
                    timeout: float | None, progress: Callable[[int, int], Any] | None
                    ) -> None:
        t0 = time.monotonic()
        view = None
        if tasks is None:
            # every task of the session: those submitted here, and any the event stream
            # shows live (tasks submitted in cells with `await session.submit_tasks`)
            session.get_statistics()  # delivers pending events: the tracker is current
            if self.tracker is None:
                self.tracker = Tracker(session)
            tracker = self.tracker
            futs = {t.future for t in self.tasks if t.future is not None and not t.done()}

            def measure() -> tuple[int, int]:
                if tracker.live or not all(f.done() for f in futs):
                    return tracker.done, max(tracker.submitted, tracker.done + 1)
                return tracker.done, tracker.done
        else:
            unbound = [t.uid for t in tasks if t.future is None]
            if unbound:
                raise SessionError(f"task {unbound[0]} was not submitted; submit it first")
            futs = {t.future for t in tasks}
            finished = [sum(f.done() for f in futs)]

            def one_done(_f: Any) -> None:
                finished[0] += 1

            for f in futs:
                if not f.done():
                    f.add_done_callback(one_done)

            def measure() -> tuple[int, int]:  # O(1): 100,000 tasks wait as cheaply as 10
                return finished[0], len(futs)
        while True:
            done, total = measure()
            elapsed = time.monotonic() - t0
            if view is None and elapsed > _PROGRESS_AFTER and progress is not None \
                    and done < total:
                view = progress(done, total)
            if view is not None:
                view.update(done, total)
            if done >= total:
                break
            if timeout is not None and elapsed >= timeout:
                if view is not None:
                    view.close(f"timed out: {done}/{total} finished")
                raise asyncio.TimeoutError(f"%rhapsody wait timed out after {timeout}s: "
                                           f"{done}/{total} tasks finished (they keep running)")
            step = 0.05 if timeout is None else max(0.0, min(0.05, timeout - elapsed))
            await asyncio.sleep(step)
        if view is not None:
            view.close(None)

    # -- canceling ---------------------------------------------------------------------
    def cancel(self, tasks: list[BaseTask] | None) -> Pending:
        """Cancel ``tasks`` (None: every live task of the session); reports how many."""
        session = self.require()

        async def cancel() -> tuple[int, int]:
            if tasks is not None:
                todo = [t for t in tasks if not t.done()]
                n = await session.cancel_tasks(todo)
                return n, len(todo)
            # tasks still being handed over first, then whatever each backend holds
            todo = [t for t in self.tasks if not t.done()]
            unfinished = {t.uid for t in todo}
            for backend in session.backends.values():
                unfinished.update(backend.live_task_states())
            n = await session.cancel_tasks(todo)
            for backend in session.backends.values():
                n += await backend.cancel_all_tasks()
            return n, len(unfinished)

        return self.host.spawn(cancel())

    # -- observation -------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        session = self.require() if self.session is None else self.session
        return self.host.call(session.get_statistics)


def _precheck(session: Session, task: Any) -> None:
    """Refuse now (in the cell) what the session would refuse later, in the background."""
    if not isinstance(task, BaseTask):
        raise SessionError(f"expected a task, got {type(task).__name__}")
    if task.state != "NEW":
        raise SessionError(f"task {task.uid} was already submitted (state {task.state})")
    name = task.backend
    if name is not None and name not in session.backends:
        raise SessionError(f"Backend '{name}' requested by task {task.uid} not found; "
                           f"registered backends: {sorted(session.backends)}")
    if name is not None and not session.backends[name].can_run(task):
        able = [n for n, b in session.backends.items() if b.can_run(task)]
        raise SessionError(f"backend '{name}' cannot run this task; use one of {able}")
    if name is None and not any(b.can_run(task) for b in session.backends.values()):
        kind = "ai" if task.get("prompt") is not None else "compute"
        raise SessionError(f"no backend of session {session.uid} runs {kind} tasks")


def _report_submit_error(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        print(f"%rhapsody: submission failed: {fut.exception()}", file=sys.stderr)


def tasks_from(value: Any) -> list[BaseTask]:
    """A task, or an iterable of tasks, as a list (for ``wait``/``cancel`` by name)."""
    if isinstance(value, BaseTask):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | dict):
        items = list(value)
        bad = [type(x).__name__ for x in items if not isinstance(x, BaseTask)]
        if not bad:
            return items
        raise SessionError(f"expected tasks, found {bad[0]} in the list")
    raise SessionError(f"expected a task or a list of tasks, got {type(value).__name__}")
