"""``attach_metrics``: one session's live metrics, computed in the observer process.

The first call creates them (in a helper process, or in this one where no process can be
started) and subscribes them to the session's event stream; later calls share them.
"""

from __future__ import annotations

from typing import Any

from ..api.errors import SessionError
from .metrics import Metrics

__all__ = ["attach_metrics"]

_attached: dict[int, tuple[Any, Any]] = {}


def attach_metrics(session: Any, *, process: bool = True, **options: Any) -> Any:
    """The metrics of ``session`` (created and subscribed on first call, then shared).

    With ``process=True`` (default) they are computed in a helper process and read
    through ``RemoteMetrics`` (see ``observe.process``: the kernel only ``marshal``s
    event batches); ``process=False`` folds them in this process. Events emitted before
    the first call are not seen. ``options`` go to ``Metrics`` (first call only).
    ``metrics.session_ref`` is a weak reference to ``session``.
    """
    events = getattr(session, "events", None)
    if events is None or not hasattr(events, "subscribe"):
        raise SessionError(f"attach_metrics needs a rhapsody_lab Session, got "
                           f"{type(session).__name__}")
    import weakref
    key = id(session)
    hit = _attached.get(key)
    if hit is not None and hit[0]() is session:
        metrics = hit[1]
        observer = getattr(metrics, "observer", None)
        if observer is None or observer.alive:
            return metrics
    if getattr(session, "closed", False):
        raise SessionError(f"session {getattr(session, 'uid', '')} is closed; plot its "
                           "journal instead: rhapsody_lab.observe.load(path)")
    Metrics(**options)  # validate here, where the caller sees the error
    metrics = None
    if process:
        from .process import RemoteMetrics, observer_for
        try:
            metrics = RemoteMetrics(observer_for(session, options), **options)
        except OSError as exc:  # cannot start a process here: fold in this one
            import logging
            logging.getLogger(__name__).warning(
                "observer process unavailable (%s); computing metrics in the kernel", exc)
    if metrics is None:
        backends = session.backends

        def capacity() -> dict[str, int]:
            return {name: b.capacity() for name, b in list(backends.items())}

        metrics = Metrics(capacity=capacity, **options)
        metrics.capacity.update(capacity())
        events.subscribe(metrics.fold_items, runs=True)
    _attached[key] = (weakref.ref(session, lambda _r: _attached.pop(key, None)), metrics)
    metrics.session_ref = weakref.ref(session)  # type: ignore[union-attr] (resource plots)
    return metrics
