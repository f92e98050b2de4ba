"""TelemetryManager: RHAPSODY 0.6.0's telemetry, fed by the session's one event stream.

``await session.start_telemetry(...)`` subscribes a manager to ``session.events`` with an
O(1)-per-batch inline subscriber that only queues the batch; everything else (events,
metrics, spans, the JSONL checkpoint, subscribers' callbacks) happens on the manager's own
thread, which yields the GIL to the event loop while batches keep arriving
(``_PAUSE``), so telemetry never blocks dispatch; it catches up when the session is quiet,
and every reader (``read_traces``, ``summary`` ...) first waits until what was emitted
before it is folded in. ``session.close()`` stops it. A manager also works on its own:
``await TelemetryManager("id").start()``, ``emit(make_event(...))``, ``await stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..api.errors import SessionError
from . import events as ev
from ._delivery import call_subscribers
from ._feeds import ResourceFeeds
from .summary import Summaries

__all__ = ["TelemetryManager"]

log = logging.getLogger(__name__)
_SLICE = 256  # events folded between two looks at the GIL share
_PAUSE = 9.0  # while batches keep coming, sleep 9x the time just spent folding (10% duty)
_MAX_PAUSE = 0.25  # seconds, at most, between two slices
_SYNC_TIMEOUT = 60.0


def _positive(name: str, value: Any, none_ok: bool) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SessionError(f"start_telemetry: {name} must be a number of seconds > 0"
                           f"{' or None' if none_ok else ''}, got {value!r}")


class TelemetryManager(ResourceFeeds, Summaries):
    """Events, OpenTelemetry metrics and spans, and a JSONL checkpoint of one session."""

    def __init__(self, session_id: str, checkpoint_interval: float | None = None,
                 checkpoint_path: str | None = None, span_processors: list | None = None,
                 metric_readers: list | None = None, resource: Any = None,
                 resource_poll_interval: float = 5.0):
        if not isinstance(session_id, str) or not session_id:
            raise SessionError(f"TelemetryManager: session_id must be a non-empty string, "
                               f"got {session_id!r}")
        _positive("checkpoint_interval", checkpoint_interval, True)
        _positive("resource_poll_interval", resource_poll_interval, False)
        if checkpoint_path is not None and not isinstance(checkpoint_path, str):
            import os
            if not isinstance(checkpoint_path, os.PathLike):
                raise SessionError(f"start_telemetry: checkpoint_path must be a folder path "
                                   f"or None, got {checkpoint_path!r}")
            checkpoint_path = os.fspath(checkpoint_path)
        for name, value in (("span_processors", span_processors),
                            ("metric_readers", metric_readers)):
            if value is not None and not isinstance(value, list | tuple):
                raise SessionError(f"start_telemetry: {name} must be a list, got "
                                   f"{type(value).__name__}; write {name}=[...]")
        self._session_id = session_id
        self._checkpoint_interval = checkpoint_interval
        self._checkpoint_path = checkpoint_path
        self._extra = (list(span_processors or ()), list(metric_readers or ()), resource)
        self.resource_poll_interval = float(resource_poll_interval)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queue = self._inbox  # RHAPSODY's name (its tests look at it)
        self._subscribers: list[Callable[[ev.BaseEvent], Any]] = []
        self._adapters: list[Any] = []
        self._running = False
        self._started = 0.0
        self._ended: float | None = None
        self._otel: Any = None
        self._fold: Any = None
        self._checkpoint_file: Any = None  # the Checkpoint, when checkpoint_path is given
        self._thread: threading.Thread | None = None
        self._hurry = threading.Event()  # a reader waits: fold at full speed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None  # the session's EventStream, once bound
        self._index: dict | None = None
        self._session: Any = None  # a weak reference to the session, once bound
        self._final_metrics: Any = None
        self._enrichers: list[Callable[[ev.BaseEvent], dict]] = []
        self._greeted: set[int] | None = None  # subscribers SessionStarted went to
        self._greeted_with: Any = None  # that event

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def checkpoint_file(self) -> str | None:
        """Path of the JSONL checkpoint, None without ``checkpoint_path``."""
        return self._checkpoint_file.path if self._checkpoint_file is not None else None

    # -- life cycle --------------------------------------------------------------------
    def _bind(self, session: Any) -> None:
        """Take ``session``'s events from now on (called by ``session.start_telemetry``)."""
        import weakref
        self._stream = session.events
        self._index = session.task_index()
        self._session = weakref.ref(session)

    async def start(self) -> None:
        """Set up the SDK, the checkpoint and the thread; emit ``SessionStarted``."""
        if self._running or self._ended is not None:
            raise SessionError(f"telemetry of {self._session_id} was already started; "
                               "create a new TelemetryManager (or session)")
        from ._checkpoint import Checkpoint
        from ._fold import Fold
        from ._otel import Otel
        self._loop = asyncio.get_running_loop()
        self._started = time.time()
        processors, readers, resource = self._extra
        self._otel = Otel(self._session_id, processors, readers, resource)
        self._fold = Fold(self._otel, self._session_id, self._index)
        self._fold.enrichers = self._enrichers
        if self._checkpoint_path is not None:
            self._checkpoint_file = Checkpoint(self._checkpoint_path, self._session_id,
                                               self._started)
        self._running = True
        self._thread = threading.Thread(target=self._work, daemon=True,
                                        name=f"rhapsody-telemetry-{self._session_id}")
        self._thread.start()
        self.emit(ev.make_event(ev.SessionStarted, session_id=self._session_id,
                                backend="rhapsody_lab", event_time=self._started))
        try:
            for adapter in self._adapters:
                adapter.start()
        except BaseException:
            await self._shut(None)
            raise
        if self._stream is not None:  # events emitted from now on (earlier ones delivered)
            if self._on_loop():
                self._stream.flush(limit=None)
            self._stream.subscribe(self._take, inline=True, on_runs=self._take)

    async def stop(self) -> None:
        """Emit ``SessionEnded``, fold everything, write the checkpoint, shut the SDK down."""
        if not self._running:
            return
        if self._stream is not None:
            if self._on_loop():
                self._stream.flush(limit=None)
            self._stream.unsubscribe(self._take)
        session = self._session() if self._session is not None else None
        if session is not None:
            session._telemetry_stopped(self)  # stopped by hand: the session lets go too
        end = time.time()
        self.emit(ev.make_event(ev.SessionEnded, session_id=self._session_id,
                                backend="rhapsody_lab", event_time=end,
                                duration_seconds=end - self._started))
        await self._shut(end)

    async def _shut(self, end: float | None) -> None:
        self._running = False
        for adapter in self._adapters:
            try:
                adapter.stop()
            except Exception:
                log.exception("telemetry adapter %r failed to stop", adapter)
        self._ended = end if end is not None else time.time()
        self._hurry.set()
        self._inbox.put(("X", None))
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, _SYNC_TIMEOUT)
            if thread.is_alive():
                log.warning("telemetry of %s did not finish within %.0f s", self._session_id,
                            _SYNC_TIMEOUT)

    # -- input -------------------------------------------------------------------------
    def _take(self, items: list) -> None:
        """The stream's inline subscriber: queue the batch (O(1), on the loop)."""
        self._inbox.put(("I", items))

    def _on_task_state_change(self, task: dict, state: str) -> None:
        """RHAPSODY's observer hook: ``task`` reached ``state`` now (any thread); the same
        path as the session's events."""
        if not self._running:
            return
        uid = task["uid"]
        if self._index is None:
            self._index = self._fold.index = {}
        self._index[uid] = task
        self._inbox.put(("I", [(time.time(), uid, state, task.get("backend") or "", None)]))

    def emit(self, event: ev.BaseEvent) -> None:
        """Add an event (any thread, never blocks); ignored once stopped."""
        if not isinstance(event, ev.BaseEvent):
            raise SessionError(f"emit: event must be a BaseEvent (see define_event and "
                               f"make_event), got {type(event).__name__}")
        if self._running:
            self._inbox.put(("E", event))

    def subscribe(self, callback: Callable[[ev.BaseEvent], Any]) -> None:
        """Call ``callback(event)`` for every later event: a plain function on the
        telemetry thread, an ``async def`` as a task on the session's loop. Its
        exceptions are logged, never raised."""
        if not callable(callback):
            raise SessionError(f"subscribe: callback must be callable taking one event, got "
                               f"{callback!r}")
        self._subscribers.append(callback)
        if self._running:  # it gets SessionStarted even if that went out just before
            self._inbox.put(("R", callback))

    def register_span_enricher(self, func: Callable[[ev.BaseEvent], dict]) -> None:
        """``func(terminal_event) -> dict`` of extra attributes for each task span."""
        self._enrichers.append(func)

    # -- the thread --------------------------------------------------------------------
    def _work(self) -> None:
        get, get_now, interval = self._inbox.get, self._inbox.get_nowait, \
            self._checkpoint_interval
        due = time.monotonic() + interval if interval else None
        held: tuple | None = None  # an item taken while gathering emitted events
        while True:
            if held is not None:
                (kind, item), held = held, None
            else:
                try:
                    kind, item = get(timeout=max(0.0, due - time.monotonic()) if due
                                     else None)
                except queue.Empty:
                    kind, item = "T", None
            if due is not None and time.monotonic() >= due:
                self._snapshot()
                due = time.monotonic() + interval
            if kind == "I":
                self._fold_items(item)
            elif kind == "E":
                batch = [item]
                while len(batch) < _SLICE:  # emitted events: fold what is there at once
                    try:
                        nxt = get_now()
                    except queue.Empty:
                        break
                    if nxt[0] != "E":
                        held = nxt
                        break
                    batch.append(nxt[1])
                self._fold_emitted(batch)
            elif kind == "S":
                item.set()
            elif kind == "R" and self._greeted is not None and id(item) not in self._greeted:
                self._greeted.add(id(item))
                call_subscribers([item], [(self._greeted_with, None)], self._loop)
            elif kind == "X":
                self._finish()
                return

    def _fold_emitted(self, batch: list) -> None:
        began = time.perf_counter()
        out: list = []
        try:
            self._fold.fold_events(batch, out)
        except Exception:
            log.exception("telemetry: folding emitted events failed; they are skipped")
        self._deliver(out)
        for event in batch:
            if event.event_type == "ResourceUpdate":
                self._to_journals(event)
        self._pause(began)

    def _fold_items(self, items: list) -> None:
        from ..api.events import expand
        events = expand(items)
        for i in range(0, len(events), _SLICE):
            began = time.perf_counter()
            out = [] if self._wants_events() else None
            try:
                self._fold.fold_items(events[i:i + _SLICE], out)
            except Exception:
                log.exception("telemetry: folding a batch failed; it is skipped")
            if out:
                self._deliver(out)
            self._pause(began)

    def _pause(self, began: float) -> None:
        """While more is queued, give the loop the GIL for ``_PAUSE`` times the folding
        just done; a reader waiting (``sync``, ``stop``) ends the pause at once."""
        if not self._hurry.is_set() and not self._inbox.empty():
            self._hurry.wait(min(_MAX_PAUSE, (time.perf_counter() - began) * _PAUSE))

    def _wants_events(self) -> bool:
        return bool(self._subscribers) or self._checkpoint_file is not None

    def _deliver(self, pairs: list) -> None:
        if self._checkpoint_file is not None:
            self._checkpoint_file.events(pairs, self._otel.trace_id)
        subs = list(self._subscribers)  # one view: subscribe() may append meanwhile
        if pairs and self._greeted is None and pairs[0][0].event_type == "SessionStarted":
            self._greeted, self._greeted_with = {id(sub) for sub in subs}, pairs[0][0]
        if subs:
            call_subscribers(subs, pairs, self._loop)

    def _snapshot(self) -> None:
        if self._checkpoint_file is not None:
            self._checkpoint_file.snapshot(self._otel.reader.get_metrics_data(),
                                           self._otel.spans)

    def _finish(self) -> None:
        self._otel.end_session(self._ended or time.time())
        self._final_metrics = self._otel.reader.get_metrics_data()
        self._snapshot()
        if self._checkpoint_file is not None:
            self._checkpoint_file.close()
        try:
            self._otel.shutdown()
        except Exception:
            log.exception("telemetry: shutting the OpenTelemetry SDK down failed")

    # -- reading -----------------------------------------------------------------------
    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def sync(self, timeout: float = _SYNC_TIMEOUT) -> bool:
        """Wait until everything emitted so far is folded in (readers call this)."""
        thread = self._thread
        if not self._running or thread is None or threading.current_thread() is thread:
            return True
        if self._stream is not None and self._on_loop():
            self._stream.flush(limit=None)
        done = threading.Event()
        self._hurry.set()
        try:
            self._inbox.put(("S", done))
            return done.wait(timeout)
        finally:
            self._hurry.clear()

    def read_metrics(self) -> Any:
        """The OpenTelemetry ``MetricsData`` now (after ``stop``: the final one)."""
        if self._otel is None:
            return None
        if not self._running:
            return self._final_metrics
        self.sync()
        return self._otel.reader.get_metrics_data()

    def read_traces(self) -> tuple:
        """Every finished span (``ReadableSpan``): one ``"task"`` per task, ``"session"``."""
        if self._otel is None:
            return ()
        self.sync()
        return self._otel.spans.get_finished_spans()

    def session_duration(self) -> float:
        """Seconds since ``start`` (until ``stop`` once stopped)."""
        if not self._started:
            return 0.0
        return round((self._ended or time.time()) - self._started, 6)

    def export_as_otlp(self, path: str | None = None) -> str:
        """The finished spans as OTLP JSON (``{"resourceSpans": [...]}``), also written
        to ``path`` when given (folders created)."""
        from .otlp import spans_to_otlp
        resource = dict(self._otel.resource.attributes) if self._otel is not None else {}
        return spans_to_otlp(self.read_traces(), resource, self._session_id, path)
