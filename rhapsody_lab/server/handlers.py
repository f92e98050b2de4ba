"""Authenticated handlers: the sessions list and the dashboard proxy (HTTP + websocket).

The proxy forwards only to the Bokeh server of a live registered session, over the Unix
socket its entry names (``registry.checked_socket``: a socket of this user in a 0700
directory of this user, so an entry written by someone else cannot lead here to their
socket), and only under the path that server was started with; the request path is
forwarded unchanged (the Bokeh server runs with ``prefix`` = the proxied path, so its pages
and its websocket URL point back through the proxy). The browser's Origin is checked by
the Jupyter server (its ``allow_origin`` rules); upstream, the proxy sends the fixed
origin the socket's Bokeh server allows (``PROXY_ORIGIN``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import HTTPRequest
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

from ..api.errors import SessionError
from ..api.states import STATES
from .registry import (
    ENV_BASE_URL,
    ENV_DIR,
    PROXY_ROOT,
    checked_socket,
    dashboard_prefix,
    read_entries,
)

__all__ = ["DashboardProxyHandler", "SessionsHandler", "setup_handlers"]

# never forwarded upstream: hop-by-hop, and the user's Jupyter credentials
_DROP_REQUEST = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                 "te", "trailer", "transfer-encoding", "upgrade", "host", "cookie",
                 "authorization", "content-length", "origin", "referer"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length",
                  "server", "date", "set-cookie"}
_KEY = r"[A-Za-z0-9._-]+"
#: the host (and Origin) of upstream requests; must match dashboard.server.PROXY_ORIGIN
PROXY_ORIGIN = "rhapsody-lab.invalid"


class _UnixResolver(Resolver):
    """Resolves every host to one Unix socket (tornado's clients then connect there)."""

    def initialize(self, path: str) -> None:  # type: ignore[override]
        self.path = path

    async def resolve(self, host: str, port: int, family: Any = socket.AF_UNSPEC
                      ) -> list[tuple[int, Any]]:
        return [(socket.AF_UNIX, self.path)]


def _registry(handler: web.RequestHandler) -> dict[str, dict[str, Any]]:
    return read_entries(handler.settings["rhapsody_lab_registry_dir"])


def _plots(entry: dict[str, Any], base_url: str) -> tuple[dict[str, str], str | None]:
    """Plot -> proxied URL, if the session's dashboard runs behind this server's proxy;
    and why not, when its socket is refused."""
    dash = entry.get("dashboard")
    if not isinstance(dash, dict) or not isinstance(dash.get("socket"), str):
        return {}, None
    prefix = dashboard_prefix(base_url, entry["key"])
    if dash.get("prefix") != prefix:
        return {}, None  # started for another server (another base URL): not reachable here
    try:
        checked_socket(dash["socket"])
    except SessionError:
        return {}, "its socket is not private to this user: not proxied"
    return {p: f"{prefix}/{p}" for p in dash.get("plots", []) if isinstance(p, str)}, None


class SessionsHandler(APIHandler):
    """``GET <base_url>rhapsody-lab/sessions``: the live sessions of this user's kernels.

    The answer also carries ``states``, the task states in life-cycle order, so the lab
    panel orders its counts by the engine's one list instead of a copy of it.
    """

    auth_resource = "rhapsody_lab"  # for custom Authorizers: read access to sessions

    @web.authenticated
    @authorized
    async def get(self) -> None:
        paths = await self._notebook_paths()
        sessions = []
        for key, e in _registry(self).items():
            plots, refused = _plots(e, self.base_url)
            counts = e.get("counts") if isinstance(e.get("counts"), dict) else {}
            sessions.append({
                "key": key,
                "uid": e.get("uid"),
                "pid": e.get("pid"),
                "kernel_id": e.get("kernel_id"),
                "path": paths.get(e.get("kernel_id") or ""),
                "backends": e.get("backends") or {},
                "counts": counts,
                "total": e.get("total", sum(v for v in counts.values()
                                            if isinstance(v, int))),
                "started": e.get("started"),
                "updated": e.get("updated"),
                "dashboard": plots,
                "dashboard_error": refused or e.get("dashboard_error"),
            })
        sessions.sort(key=lambda s: (s["started"] or 0, s["key"]))
        self.finish(json.dumps({"sessions": sessions, "states": list(STATES)}))

    async def _notebook_paths(self) -> dict[str, str]:
        manager = self.settings.get("session_manager")
        if manager is None:
            return {}
        try:
            listed = await manager.list_sessions()
        except Exception:  # a listing hiccup must not hide the sessions themselves
            return {}
        return {s["kernel"]["id"]: s.get("path") for s in listed if s.get("kernel")}


class DashboardProxyHandler(WebSocketHandler, JupyterHandler):
    """``<base_url>rhapsody-lab/dashboard/<key>/<path>`` -> the session's Bokeh server."""

    auth_resource = "rhapsody_lab"

    def initialize(self) -> None:
        self._upstream: Any = None
        self._ws_url = ""
        self._socket = ""
        self._subprotocols: list[str] = []
        self._origin = ""

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "authentication required")  # never redirect a proxy

    def check_origin(self, origin: str | None = None) -> bool:
        return JupyterHandler.check_origin(self)  # the server's allow_origin rules

    def _target(self, key: str) -> str:
        """The checked socket path of ``key``'s dashboard (404 / 403 otherwise)."""
        entry = _registry(self).get(key)
        if entry is None:
            raise web.HTTPError(404, f"no live rhapsody_lab session {key!r}")
        dash = entry.get("dashboard")
        path = dash.get("socket") if isinstance(dash, dict) else None
        if not isinstance(path, str):
            raise web.HTTPError(404, f"session {key!r} has no dashboard")
        prefix = dashboard_prefix(self.base_url, key)
        if dash.get("prefix") != prefix or not (self.request.path == prefix or
                                                self.request.path.startswith(prefix + "/")):
            raise web.HTTPError(404, f"session {key!r} has no dashboard under {prefix}")
        try:
            return checked_socket(path)
        except SessionError as exc:
            self.log.warning("rhapsody_lab: session %s: %s", key, exc)
            raise web.HTTPError(403, "the dashboard socket is not private to this "
                                     "user") from None

    def _upstream_uri(self) -> str:
        query = [(k, v) for k, v in parse_qsl(self.request.query, keep_blank_values=True)
                 if k != "token"]  # the Jupyter token stays here
        return self.request.path + (f"?{urlencode(query)}" if query else "")

    @web.authenticated
    @authorized("read")
    async def get(self, key: str, rest: str | None = None) -> None:
        path = self._target(key)
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            self._socket = path
            self._ws_url = f"ws://{PROXY_ORIGIN}{self._upstream_uri()}"
            self._origin = f"http://{PROXY_ORIGIN}"
            await WebSocketHandler.get(self, key, rest)
            return
        await self._forward(path)

    @web.authenticated
    @authorized("read")
    async def head(self, key: str, rest: str | None = None) -> None:
        await self._forward(self._target(key))

    async def _forward(self, path: str) -> None:
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in _DROP_REQUEST}
        request = HTTPRequest(f"http://{PROXY_ORIGIN}{self._upstream_uri()}",
                              method=self.request.method, headers=headers,
                              follow_redirects=False, decompress_response=False,
                              connect_timeout=10, request_timeout=60)
        client = SimpleAsyncHTTPClient(force_instance=True,
                                       resolver=_UnixResolver(path=path))
        try:
            response = await client.fetch(request, raise_error=False)
        finally:
            client.close()
        if response.code == 599:
            raise web.HTTPError(502, f"the dashboard on {path} did not answer: "
                                     f"{response.error}")
        self.set_status(response.code, response.reason)
        for name, value in response.headers.get_all():
            if name.lower() not in _DROP_RESPONSE:
                self.set_header(name, value)
        if response.code in (204, 304) or self.request.method == "HEAD":
            self.finish()
        else:
            self.finish(response.body)

    # -- websocket ---------------------------------------------------------------------
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        self._subprotocols = list(subprotocols)  # Bokeh sends ["bokeh", <session token>]
        return subprotocols[0] if subprotocols else None

    async def open(self, key: str, rest: str | None = None) -> None:
        request = HTTPRequest(self._ws_url, headers={"Origin": self._origin},
                              connect_timeout=10, request_timeout=30)
        try:
            self._upstream = await websocket_connect(
                request, subprotocols=self._subprotocols or None,
                on_message_callback=self._from_upstream, max_message_size=64 * 2**20,
                resolver=_UnixResolver(path=self._socket))
        except Exception as exc:
            self.log.warning("rhapsody_lab: dashboard websocket %s on %s failed: %s",
                             self._ws_url, self._socket, exc)
            self.close(1011, "dashboard unreachable")

    def _from_upstream(self, message: str | bytes | None) -> None:
        if message is None:  # the Bokeh server closed it
            if self.ws_connection is not None:
                self.close()
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            if self._upstream is not None:
                self._upstream.close()

    async def on_message(self, message: str | bytes) -> None:
        if self._upstream is not None:
            try:
                await self._upstream.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                self.close()

    def on_close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def setup_handlers(serverapp: Any) -> None:
    """Register the handlers; publish the registry dir and base URL to future kernels."""
    web_app = serverapp.web_app
    directory = os.environ.get(ENV_DIR) or str(Path(serverapp.runtime_dir) / "rhapsody_lab")
    base_url = web_app.settings.get("base_url", "/")
    web_app.settings["rhapsody_lab_registry_dir"] = directory
    # kernels inherit the server's environment: they register where we read, and start
    # their dashboards under the path our proxy forwards
    os.environ[ENV_DIR] = directory
    os.environ[ENV_BASE_URL] = base_url
    root = url_path_join(base_url, "rhapsody-lab")
    web_app.add_handlers(".*$", [
        (url_path_join(root, "sessions"), SessionsHandler),
        (url_path_join(base_url, PROXY_ROOT, f"({_KEY})(/.*)?"), DashboardProxyHandler),
    ])
    serverapp.log.info("rhapsody_lab: sessions at %s, registry %s", root, directory)
