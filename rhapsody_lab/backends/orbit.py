"""OrbitExecutionBackend: tasks on a remote node through an ORBIT broker (``radical.orbit``).

As in RHAPSODY 0.6.0: this process joins the broker as a participant, opens a session of
an endpoint's ``rhapsody`` plugin (``endpoint_name``, else the first endpoint serving
one) with the ``backends`` named there, and sends its tasks in batches (``batch_window``
seconds, at most ``batch_limit``); the endpoint runs them and notifies their states.
Functions travel cloudpickled, so the endpoint needs the same Python minor version.
An endpoint may run RHAPSODY or rhapsody_lab (``python -m
rhapsody_lab.backends.orbit_endpoint``). Results come back through ORBIT's JSON wire: a
tuple returned comes back as a list. An endpoint that leaves the broker, or a broker that
has not answered a probe for 30 s (``_orbit_link.LOST_AFTER``), fails every live task with
the reason. ``cert``/``token`` (the broker's pinned TLS
certificate, its ingress token) default to ``radical.orbit``'s own resolution
(``$RADICAL_ORBIT_BROKER_CERT``/``_TOKEN``, then ``~/.radical/orbit/``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Sequence
from typing import Any

from ..api.backend import BaseBackend
from ..api.errors import BackendError, SessionError, TaskExecutionError
from ..api.states import CANCELED, DONE, FAILED, RUNNING, TERMINAL_STATES

__all__ = ["OrbitExecutionBackend"]

#: Fields of a task that are its outcome or local routing, never sent.
_NOT_SENT = frozenset({"state", "stdout", "stderr", "exit_code", "return_value",
                       "response", "exception", "backend"})


def _orbit_installed() -> bool:
    try:
        return importlib.util.find_spec("radical.orbit") is not None
    except (ImportError, ValueError):
        return False


def _check_positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SessionError(f"OrbitExecutionBackend: {field} must be a positive number of "
                           f"seconds, got {value!r}")


def _reason(task: dict, record: dict) -> str:
    """Why a task failed remotely: a function's exception text, else its stderr."""
    error = str(record.get("exception") or record.get("error") or "")
    prefix = f"Task '{task['uid']}' failed"  # the endpoint's own TaskExecutionError text
    if error.startswith(prefix):
        error = error.partition(": ")[2]
    stderr = task["stderr"].strip()
    if task.get("function") is not None:
        return error or stderr
    return stderr or error


class OrbitExecutionBackend(BaseBackend):
    """Tasks on a remote node through an ORBIT broker (``radical.orbit``)."""

    task_kinds = frozenset({"function", "executable"})

    def __init__(self, broker_url: str | None = None, endpoint_name: str | None = None,
                 backends: list[str] | None = None, name: str = "orbit",
                 participant_name: str | None = None, plugin_name: str = "rhapsody",
                 pool: str | None = None, session_kwargs: dict | None = None,
                 batch_window: float | None = None, batch_limit: int = 1024,
                 start_timeout: float = 30.0, init_timeout: float = 120.0,
                 cert: str | None = None, token: str | None = None):
        super().__init__(name)
        for field, value in (("broker_url", broker_url), ("endpoint_name", endpoint_name),
                             ("participant_name", participant_name), ("pool", pool),
                             ("cert", cert), ("token", token)):
            if value is not None and (not isinstance(value, str) or not value):
                raise SessionError(f"OrbitExecutionBackend: {field} must be a non-empty "
                                   f"string or None, got {value!r}")
        if broker_url is not None and not broker_url.startswith(("http://", "https://")):
            raise SessionError(f"OrbitExecutionBackend: broker_url must be an http(s) URL "
                               f"such as 'https://localhost:8000', got {broker_url!r}")
        if not isinstance(plugin_name, str) or not plugin_name:
            raise SessionError(f"OrbitExecutionBackend: plugin_name must be a non-empty "
                               f"string, got {plugin_name!r}")
        if backends is not None and (not isinstance(backends, list) or not backends or
                                     not all(isinstance(b, str) and b for b in backends)):
            raise SessionError(f"OrbitExecutionBackend: backends must be a non-empty list "
                               f"of backend names such as ['dragon_v3'], got {backends!r}")
        if session_kwargs is not None and not isinstance(session_kwargs, dict):
            raise SessionError(f"OrbitExecutionBackend: session_kwargs must be a dict, got "
                               f"{type(session_kwargs).__name__}")
        if batch_window is not None and (isinstance(batch_window, bool) or not isinstance(
                batch_window, (int, float)) or batch_window < 0):
            raise SessionError(f"OrbitExecutionBackend: batch_window must be >= 0 seconds "
                               f"(0: no batching), got {batch_window!r}")
        if isinstance(batch_limit, bool) or not isinstance(batch_limit, int) or batch_limit < 1:
            raise SessionError(f"OrbitExecutionBackend: batch_limit must be an int >= 1, got "
                               f"{batch_limit!r}")
        _check_positive("start_timeout", start_timeout)
        _check_positive("init_timeout", init_timeout)
        self.broker_url = broker_url
        self.endpoint_name = endpoint_name
        self.remote_backends = list(backends or ["dragon_v3"])
        self.plugin_name = plugin_name
        self.pool = pool
        self._link_args: dict[str, Any] = dict(
            participant_name=participant_name, session_kwargs=dict(session_kwargs or {}),
            cert=cert, token=token, start_timeout=float(start_timeout),
            init_timeout=float(init_timeout))
        self._batch_window = 0.25 if batch_window is None else float(batch_window)
        self._batch_limit = batch_limit
        self._link: Any = None
        self._buffer: list[tuple[dict, dict]] = []  # (task, its wire dict), not sent yet
        self._full = asyncio.Event()
        self._pump: asyncio.Task | None = None
        self._send_lock = asyncio.Lock()
        self._fetches: set[asyncio.Task] = set()

    # -- life cycle --------------------------------------------------------------------
    async def _start(self) -> None:
        if not _orbit_installed():
            raise BackendError(self.name, "OrbitExecutionBackend needs radical.orbit: pip "
                               "install 'rhapsody-lab[orbit]'")
        from ._orbit_link import OrbitLink
        loop = asyncio.get_running_loop()
        link = OrbitLink(
            broker_url=self.broker_url, endpoint_name=self.endpoint_name,
            plugin_name=self.plugin_name, backends=self.remote_backends, pool=self.pool,
            on_update=lambda bodies: loop.call_soon_threadsafe(self._on_updates, bodies),
            on_lost=lambda reason: loop.call_soon_threadsafe(self._on_lost, reason),
            **self._link_args)
        try:
            await asyncio.to_thread(link.open)
        except Exception as exc:
            raise BackendError(self.name, f"could not open a {self.plugin_name!r} session "
                               f"through the ORBIT broker {link.broker_url or '(no broker_url)'}: "
                               f"{exc}") from exc
        self._link = link
        self.broker_url, self.endpoint_name = link.broker_url, link.endpoint

    async def _stop(self) -> None:
        self._buffer.clear()
        if self._pump is not None:
            self._pump.cancel()
        for job in list(self._fetches):
            job.cancel()
        link, self._link = self._link, None
        if link is not None:
            async with self._send_lock:  # a batch being sent reaches the endpoint first
                await asyncio.to_thread(link.close)

    def capacity(self) -> int:
        return 1  # the endpoint's slots are not known here

    # -- submitting --------------------------------------------------------------------
    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        tasks = list(tasks)
        if not tasks:
            return
        self._accept(tasks)
        pool = self.pool
        for task in tasks:
            wire = {k: v for k, v in task.items() if v is not None and k not in _NOT_SENT}
            if pool:
                wire.setdefault("pool", pool)
            self._buffer.append((task, wire))
        if len(self._buffer) >= self._batch_limit or self._batch_window <= 0:
            self._full.set()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        """Send the buffer in batches: after ``batch_window``, or at once when full."""
        try:
            while self._buffer:
                if not self._full.is_set():
                    try:
                        await asyncio.wait_for(self._full.wait(), self._batch_window)
                    except TimeoutError:
                        pass
                self._full.clear()
                batch = self._buffer[:self._batch_limit]
                del self._buffer[:self._batch_limit]
                if len(self._buffer) >= self._batch_limit:
                    self._full.set()
                async with self._send_lock:
                    await self._send(batch)
        finally:
            self._pump = None

    async def _send(self, batch: list[tuple[dict, dict]]) -> None:
        link = self._link
        if link is None or not batch:
            return
        try:
            bad = await asyncio.to_thread(link.send, [wire for _, wire in batch])
        except Exception as exc:
            reason = f"the ORBIT endpoint {self.endpoint_name!r} did not accept it: {exc}"
            bad = [(task["uid"], reason) for task, _ in batch]
        tasks = {task["uid"]: task for task, _ in batch}
        for uid, reason in bad:
            self._fail(tasks[uid], reason)

    def _fail(self, task: dict, reason: str) -> None:
        task["exception"] = BackendError(self.name, f"task {task['uid']}: {reason}")
        task["stderr"] = f"[rhapsody_lab] {reason}"
        self.report(task, FAILED, time.time())

    # -- outcomes (on the loop) --------------------------------------------------------
    def _on_updates(self, bodies: list[dict]) -> None:
        ended = []
        now = time.time()
        for body in bodies:
            task = self._live.get(body["uid"])
            if task is None:
                continue
            state = str(body.get("state", "")).upper()
            if state == RUNNING:
                self.report(task, RUNNING, now)
            elif state in TERMINAL_STATES or state == "COMPLETED":
                ended.append((task, body))
        if ended and self._link is not None:
            job = asyncio.get_running_loop().create_task(self._complete(ended))
            self._fetches.add(job)
            job.add_done_callback(self._fetches.discard)

    async def _complete(self, ended: list[tuple[dict, dict]]) -> None:
        """Fetch the ended tasks' stdout/stderr (not in notifications), then finish them."""
        link = self._link
        details = await asyncio.to_thread(link.details, [t["uid"] for t, _ in ended]) \
            if link is not None else {}
        now = time.time()
        for task, body in ended:
            if task["state"] in TERMINAL_STATES:
                continue  # canceled here meanwhile
            self.report(task, self._outcome(task, body, details.get(task["uid"], {})), now)

    def _outcome(self, task: dict, body: dict, detail: dict) -> str:
        """Fill ``task`` in from the endpoint's notification and record; its state."""
        record = {**detail, **body}
        for field in ("stdout", "stderr"):
            value = record.get(field)
            task[field] = value if isinstance(value, str) else ""
        task["exit_code"] = record.get("exit_code")
        task["return_value"] = record.get("return_value")
        state = str(body.get("state", "")).upper()
        if state == CANCELED:
            return CANCELED
        if state in (DONE, "COMPLETED") and not body.get("error"):
            return DONE
        reason = _reason(task, record) or f"{state} on the ORBIT endpoint"
        task["exception"] = TaskExecutionError(task["uid"], reason, task["exit_code"])
        if not task["stderr"]:
            task["stderr"] = reason
        return FAILED

    def _on_lost(self, reason: str) -> None:
        self._buffer.clear()
        if self._backend_state == "RUNNING":
            self.fail_live(reason)

    # -- canceling ---------------------------------------------------------------------
    async def cancel_task(self, uid: str) -> bool:
        task = self._live.get(uid)
        if task is None:
            return False
        for i, (queued, _) in enumerate(self._buffer):
            if queued["uid"] == uid:
                del self._buffer[i]
                self._finish(task, CANCELED, time.time(), reason="canceled before it was sent")
                return True
        link = self._link
        if link is None:
            return False
        async with self._send_lock:  # a batch holding it reaches the endpoint first
            pass
        if not await asyncio.to_thread(link.cancel, uid) or uid not in self._live:
            return False
        self._finish(task, CANCELED, time.time(), reason="canceled on the ORBIT endpoint")
        return True
