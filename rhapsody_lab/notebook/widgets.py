"""ipywidgets: the live session panel, and progress for long waits.

The panel shows the session's backends and capacity, task counts by state, a progress bar
(finished / submitted) and buttons to cancel the tasks and stop the session. It redraws
from a timer it owns on the session's loop (4 Hz, only when the event stream moved), held
by weak reference so a forgotten panel is collected; the timer ends with the session.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any

import ipywidgets as w

from ..api import Session
from ..api.states import SHOWN_STATES
from .controller import Controller
from .reprs import _state, session_html, session_text

__all__ = ["SessionPanel", "TerminalBar", "WidgetBar", "panel_for", "progress_view"]

_PERIOD = 0.25
_BACKLOG = 4_000  # undelivered events above which a redraw waits for the stream
_panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def panel_for(ctl: Controller, session: Session) -> SessionPanel:
    """The one panel of ``session`` (every display shows the same live widget)."""
    panel = _panels.get(session)
    if panel is None:
        panel = _panels[session] = SessionPanel(ctl, session)
    return panel


class SessionPanel:
    """A live view of a session with cancel/stop buttons; ``.box`` is the widget."""

    def __init__(self, ctl: Controller, session: Session):
        self.ctl = ctl
        self._session = weakref.ref(session)
        self.title = w.HTML()
        self.backends = w.HTML()
        self.counts = w.HTML()
        self.bar = w.IntProgress(value=0, min=0, max=1, description="finished",
                                 bar_style="info", layout=w.Layout(width="60%"))
        self.bar_label = w.Label()
        self.message = w.Label()
        self.cancel_button = w.Button(description="Cancel tasks", icon="ban",
                                      tooltip="cancel every task that has not finished")
        self.stop_button = w.Button(description="Stop session", icon="power-off",
                                    button_style="danger",
                                    tooltip="cancel running tasks and shut the backends down")
        self.cancel_button.on_click(self._on_cancel)
        self.stop_button.on_click(self._on_stop)
        self.box = w.VBox([self.title, self.backends, self.counts,
                           w.HBox([self.bar, self.bar_label]),
                           w.HBox([self.cancel_button, self.stop_button, self.message])])
        self._seen: tuple | None = None
        self._timer: Any = None
        ctl.host.call(self.refresh)  # session state is read on its loop thread only
        if not session.closed:
            ctl.host.loop.call_soon_threadsafe(self._schedule)
            ctl.panels.append(self)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.mimebundle(), raw=True)

    def mimebundle(self) -> dict:
        """The widget, with text/html and text/plain beside it for static viewers."""
        bundle = dict(self.box._repr_mimebundle_() or {})
        session = self._session()
        if session is not None:
            stats = None if session.closed else self.ctl.host.call(session.get_statistics)
            bundle["text/html"] = session_html(session, stats)
            bundle["text/plain"] = session_text(session)
        return bundle

    # -- live update (loop thread) -----------------------------------------------------
    def _schedule(self) -> None:
        ref = weakref.ref(self)
        self._timer = self.ctl.host.loop.call_later(_PERIOD, _tick, ref)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refresh(self) -> None:
        """Redraw from the session (call on the loop thread)."""
        session = self._session()
        if session is None:
            return
        tracker = self.ctl.tracker if self.ctl.session is session else None
        key = (session.closed, tracker.changed if tracker else None,
               session.events.emitted_total, session.events.pending,
               tuple(getattr(b, "backend_state", "") for b in session.backends.values()))
        if key == self._seen:
            return
        if session.events.pending > _BACKLOG and not session.closed:
            return  # let the session's own bounded flushes catch up first (never one huge one)
        self._seen = key
        stats = session.get_statistics() if not session.closed else None
        state = "stopped" if session.closed else "running"
        if self.ctl.start_error is not None and self.ctl.session is session:
            state = f"failed to start: {self.ctl.start_error}"
        self.title.value = f"<b>rhapsody_lab session {session.uid}</b> — {state}"
        rows = "".join(
            f"<tr><td>{name}</td><td>{type(b).__name__}</td>"
            f"<td>{getattr(b, 'backend_state', '?')}</td><td>{_capacity(b)}</td></tr>"
            for name, b in session.backends.items())
        self.backends.value = ("<table><tr><th>backend</th><th>type</th><th>state</th>"
                               f"<th>slots</th></tr>{rows}</table>")
        if stats is not None:
            counts = stats["counts"]
            self.counts.value = " ".join(
                f"{_state(s)}&nbsp;{counts.get(s, 0)}"
                for s in SHOWN_STATES)
            total = stats["summary"]["total_tasks"]
            finished = stats["summary"].get("finished_tasks", 0)
            self.bar.max = max(total, 1)
            self.bar.value = finished
            self.bar.bar_style = "danger" if counts.get("FAILED") else (
                "success" if total and finished == total else "info")
            rate = stats["throughput"]["recent"] or stats["throughput"]["overall"]
            self.bar_label.value = f"{finished}/{total} ({rate:.0f} tasks/s)"
        closed = session.closed
        self.cancel_button.disabled = closed
        self.stop_button.disabled = closed

    # -- buttons -----------------------------------------------------------------------
    def _on_cancel(self, _button: Any = None) -> None:
        self.message.value = "canceling…"  # before: the callback may run at once
        pending = self.ctl.cancel(None)
        pending.future.add_done_callback(self._report_cancel)

    def _report_cancel(self, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.message.value = f"cancel failed: {fut.exception() if not fut.cancelled() else ''}"
            return
        n, asked = fut.result()
        self.message.value = f"canceled {n} of {asked} unfinished tasks"

    def _on_stop(self, _button: Any = None) -> None:
        self.stop_button.disabled = self.cancel_button.disabled = True
        self.message.value = "stopping…"
        pending = self.ctl.stop()
        pending.future.add_done_callback(
            lambda fut: setattr(self.message, "value", "session stopped"
                                if not fut.cancelled() and fut.exception() is None
                                else f"stop failed: {fut.exception()}"))


def _tick(ref: weakref.ref) -> None:
    panel = ref()
    if panel is None:
        return
    session = panel._session()
    try:
        panel.refresh()
    except Exception as exc:  # a display problem must never stop the loop
        panel.message.value = f"panel update failed: {exc}"
    if session is not None and not session.closed:
        panel._schedule()


def _capacity(backend: Any) -> str:
    try:
        return str(backend.capacity())
    except Exception:
        return "?"


# -- progress for long waits -----------------------------------------------------------
class WidgetBar:
    """A progress bar widget displayed in the waiting cell."""

    def __init__(self, done: int, total: int, label: str = "waiting"):
        from IPython.display import display
        self.bar = w.IntProgress(value=done, min=0, max=max(total, 1), description=label,
                                 bar_style="info")
        self.text = w.Label(f"{done}/{total}")
        self.box = w.HBox([self.bar, self.text])
        self._t0 = time.monotonic()
        display(self.box)

    def update(self, done: int, total: int) -> None:
        self.bar.max = max(total, 1)
        self.bar.value = done
        self.text.value = f"{done}/{total} ({time.monotonic() - self._t0:.1f}s)"

    def close(self, message: str | None) -> None:
        self.bar.bar_style = "warning" if message else "success"
        if message:
            self.text.value = message


class TerminalBar:
    """The same on a terminal: one redrawn line, at most 10 times a second."""

    def __init__(self, done: int, total: int, label: str = "waiting", stream: Any = None):
        self.stream = stream or sys.stdout
        self.label = label
        self._last = 0.0
        self._t0 = time.monotonic()
        self.update(done, total)

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} ({now - self._t0:.1f}s)")
        self.stream.flush()

    def close(self, message: str | None) -> None:
        self.stream.write(f" {message}\n" if message else "\n")
        self.stream.flush()


def progress_view(widgets: bool) -> Any:
    """A factory ``(done, total) -> view`` for ``Controller.wait``."""
    return WidgetBar if widgets else TerminalBar
