"""Where the notebook's session runs: the kernel's event loop, or a background loop thread.

- **In a Jupyter kernel** (ipykernel) cells execute *inside* the kernel's running asyncio
  loop, so the session lives on that loop: magics schedule coroutines with
  ``loop.create_task`` and return at once, and top-level ``await`` in a cell runs on the
  same loop as the backends' completions.
- **In a terminal IPython** (or a bare ``InteractiveShell``) no loop runs between cells, so
  backends would stall until the next ``await``. There a daemon thread runs a private loop
  for the session, and IPython's ``loop_runner`` is pointed at it so a cell's top-level
  ``await session.submit_tasks(...)`` runs on that same loop (restored on unload).

``Host.spawn`` schedules a coroutine from either thread; ``Host.call`` runs a small
function on the loop thread and returns its value (session state is only touched there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Host", "Pending"]

T = TypeVar("T")


class Host:
    """An asyncio loop the session runs on, and how to reach it from a cell."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread | None):
        self.loop = loop
        self.thread = thread  # None: the kernel's own loop (we do not own it)
        self._loop_thread_id = thread.ident if thread is not None else threading.get_ident()

    @classmethod
    def detect(cls) -> Host:
        """The running loop of this thread (a kernel), else a new background loop thread."""
        try:
            return cls(asyncio.get_running_loop(), None)
        except RuntimeError:
            return cls.background()

    @classmethod
    def background(cls) -> Host:
        """A new event loop on a daemon thread (a terminal IPython's loop only runs while
        a cell awaits, so the session cannot live there)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="rhapsody-notebook-loop", daemon=True)
        thread.start()
        ready.wait(5)
        return cls(loop, thread)

    @property
    def mode(self) -> str:
        """``"kernel"`` (the kernel's loop) or ``"thread"`` (our background loop)."""
        return "kernel" if self.thread is None else "thread"

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread_id

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Pending:
        """Run ``coro`` on the loop without waiting; returns an awaitable handle."""
        if self.on_loop_thread():
            return Pending(self, self.loop.create_task(coro))
        return Pending(self, asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the loop thread and return its result."""
        if self.on_loop_thread():
            return fn()

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Block this (non-loop) thread until ``coro`` finishes on the loop."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise

    # -- terminal IPython: top-level await runs on our loop ------------------------------
    def runner(self, coro: Awaitable[T]) -> T:
        """An IPython ``loop_runner``: run a cell's coroutine on the background loop."""
        return self.run(_as_coroutine(coro))

    def close(self) -> None:
        """Stop the background loop thread (never the kernel's loop)."""
        if self.thread is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


class Pending:
    """Work already running on the session loop; ``await`` it (or ``.result()`` off-loop).

    A magic returns one of these: a cell that awaits it blocks until the work is done,
    one that does not lets it finish in the background (no "never awaited" warning).
    """

    def __init__(self, host: Host, fut: asyncio.Future | concurrent.futures.Future):
        self.host = host
        self.future = fut

    def done(self) -> bool:
        return self.future.done()

    def __await__(self):
        fut = self.future
        if isinstance(fut, concurrent.futures.Future):
            if self.host.on_loop_thread():
                return (yield from asyncio.wrap_future(fut).__await__())
            fut = asyncio.wrap_future(fut)
        return (yield from fut.__await__())

    def result(self, timeout: float | None = None) -> Any:
        """Block until done (only from a thread other than the loop's)."""
        if isinstance(self.future, concurrent.futures.Future):
            return self.future.result(timeout)
        if self.host.on_loop_thread():
            raise RuntimeError("cannot block the event loop; `await` this instead")
        return asyncio.run_coroutine_threadsafe(_as_coroutine(self.future),
                                                self.host.loop).result(timeout)

    def __repr__(self) -> str:
        state = "done" if self.done() else "running in the background (await it to wait)"
        return f"<rhapsody {state}>"
