"""The blocking side of ``OrbitExecutionBackend``: one ORBIT participant and its client.

``OrbitLink`` joins the broker as an ``engine`` participant (``radical.orbit``'s
``EndpointRuntime``), opens a session of the endpoint's ``rhapsody`` plugin (its
``RhapsodyClient``) and forwards the plugin's task notifications and the endpoint's loss
to callbacks. Every method here blocks on the network: the backend calls them through
``asyncio.to_thread``; the callbacks come on the runtime's callback thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from radical.orbit import EndpointRuntime
from radical.orbit.plugin_rhapsody import RhapsodyClient

__all__ = ["OrbitLink"]

log = logging.getLogger(__name__)

#: the broker is probed every this many seconds (a request to the endpoint through it)...
PROBE_EVERY = 5.0
#: ...and declared lost, failing every live task, once it has not answered for this long
#: (radical.orbit itself reconnects forever, and its calls wait across a reconnect)
LOST_AFTER = 30.0


class OrbitLink:
    """A connection to one ORBIT endpoint's ``rhapsody`` plugin session."""

    def __init__(self, *, broker_url: str | None, endpoint_name: str | None,
                 plugin_name: str, backends: list[str], participant_name: str | None,
                 pool: str | None, session_kwargs: dict, cert: str | None,
                 token: str | None, start_timeout: float, init_timeout: float,
                 on_update: Callable[[list[dict]], None], on_lost: Callable[[str], None]):
        self.broker_url = broker_url
        self.endpoint = endpoint_name or ("broker" if pool else None)
        self._plugin = plugin_name
        self._backends = backends
        self._participant = participant_name or f"rhapsody_lab.{uuid.uuid4().hex[:8]}"
        self._session_kwargs = session_kwargs
        self._cert, self._token = cert, token
        self._start_timeout, self._init_timeout = start_timeout, init_timeout
        self._on_update, self._on_lost = on_update, on_lost
        self._runtime: Any = None
        self._client: Any = None
        self._lost = False
        self._closed = threading.Event()

    # -- opening and closing -----------------------------------------------------------
    def open(self) -> None:
        """Register with the broker, pick the endpoint, open a plugin session (blocks)."""
        runtime = EndpointRuntime(broker_url=self.broker_url, cert=self._cert,
                                  token=self._token, name=self._participant, role="engine")
        self.broker_url = runtime.broker_url
        try:
            runtime.start(wait=True, timeout=self._start_timeout)
            if not runtime.wait_registered(timeout=0):
                raise RuntimeError(f"could not register with the ORBIT broker "
                                   f"{self.broker_url} within {self._start_timeout} s")
            if self.endpoint is None:
                self.endpoint = self._choose(runtime.topology())
            client = runtime.get_plugin(self.endpoint, self._plugin, backends=self._backends,
                                        init_timeout=self._init_timeout,
                                        **self._session_kwargs)
            client.register_notification_callback(self._note, topic="task_status")
            client.register_notification_callback(self._note, topic="task_status_batch")
            runtime.register_topology_callback(self._topology)
        except BaseException:
            runtime.stop()
            raise
        self._runtime, self._client = runtime, client
        threading.Thread(target=self._watch_broker, daemon=True,
                         name=f"orbit-watch-{self._participant}").start()

    def _choose(self, topology: dict[str, dict]) -> str:
        """The first present endpoint serving the plugin (not this participant)."""
        for name, info in topology.items():
            if name == self._participant or info.get("role") in ("broker", "consumer"):
                continue
            if info.get("liveness") in (None, "present") and \
                    self._plugin in (info.get("plugins") or {}):
                return name
        raise RuntimeError(f"no endpoint on the ORBIT broker {self.broker_url} serves a "
                           f"{self._plugin!r} plugin (start one, or pass endpoint_name=)")

    def close(self) -> None:
        """Cancel what still runs, close the plugin session, leave the broker (blocks)."""
        self._closed.set()
        client, runtime = self._client, self._runtime
        self._client = self._runtime = None
        if client is not None and not self._lost:
            for step in (client.cancel_all_tasks, client.close):
                try:
                    step()
                except Exception as exc:  # the endpoint may be gone already
                    log.debug("ORBIT session %s: %s failed: %s", client.sid,
                              step.__name__, exc)
        if runtime is not None:
            runtime.stop()

    # -- tasks -------------------------------------------------------------------------
    def send(self, wire: list[dict]) -> list[tuple[str, str]]:
        """Submit task dicts; returns ``(uid, reason)`` of those that cannot be encoded.

        A transport or endpoint error raises: then none of ``wire`` was accepted.
        """
        ok, bad = [], []
        for td in wire:
            try:
                RhapsodyClient._serialize_task(td)
            except Exception as exc:  # e.g. a function cloudpickle cannot encode
                bad.append((td["uid"], f"cannot be encoded for ORBIT: {exc!r}"))
            else:
                ok.append(td)
        if ok:
            self._client.submit_tasks(ok)
        return bad

    def details(self, uids: list[str]) -> dict[str, dict]:
        """Each task's full record on the endpoint (stdout, stderr...); {} if unreachable."""
        found: dict[str, dict] = {}
        for uid in uids:
            try:
                task = self._client.get_task(uid)
            except Exception as exc:
                log.debug("ORBIT get_task %s failed: %s", uid, exc)
                continue
            RhapsodyClient._decode_return_value(task)
            found[uid] = task
        return found

    def cancel(self, uid: str) -> bool:
        """Ask the endpoint to cancel ``uid``; False if it does not know it (any more)."""
        try:
            self._client.cancel_task(uid)
        except Exception as exc:
            log.debug("ORBIT cancel %s failed: %s", uid, exc)
            return False
        return True

    # -- the broker's liveness (a thread of its own) ------------------------------------
    def _watch_broker(self) -> None:
        """Probe the broker until closed; past ``LOST_AFTER`` without an answer, report
        the link lost (a dead broker sends no topology change)."""
        answered = time.monotonic()
        while not self._closed.wait(PROBE_EVERY):
            runtime, dst = self._runtime, self.endpoint
            if runtime is None or self._lost:
                return
            try:  # any response, an error status included, proves the path is up
                runtime.call(dst, "GET", f"/{self._plugin}/", timeout=PROBE_EVERY)
                answered = time.monotonic()
                continue
            except Exception as exc:
                log.debug("ORBIT probe of %s failed: %r", dst, exc)
            silent = time.monotonic() - answered
            if silent >= LOST_AFTER and not self._closed.is_set() and not self._lost:
                self._lost = True
                self._on_lost(f"the ORBIT broker {self.broker_url} has not answered for "
                              f"{silent:.0f} s")
                return

    # -- callbacks (the runtime's callback thread) -------------------------------------
    def _note(self, endpoint: str, plugin: str, topic: str, data: dict) -> None:
        bodies = data.get("tasks", []) if topic == "task_status_batch" else [data]
        updates = []
        for body in bodies:
            if isinstance(body, dict) and body.get("uid"):
                body = dict(body)
                RhapsodyClient._decode_return_value(body)
                updates.append(body)
        if updates:
            self._on_update(updates)

    def _topology(self, participants: dict[str, dict]) -> None:
        info = participants.get(self.endpoint) if self.endpoint else None
        if self._lost or self.endpoint == "broker":
            return
        if info is None or info.get("liveness") == "lost":
            self._lost = True
            self._on_lost(f"ORBIT endpoint {self.endpoint!r} left the broker "
                          f"{self.broker_url}")
