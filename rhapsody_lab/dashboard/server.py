"""A Bokeh server with one app per plot, readable only by its owner.

``serve(session)`` starts it in a daemon thread (its own event loop, so the session's loop
never renders plots) and returns a ``DashboardServer``; ``.urls`` maps plot name -> URL.
Each Bokeh session gets its own components, refreshed by a periodic callback that holds
them by weak reference (a closed tab frees them). Who can read the plots:

- ``unix_socket=True`` (what the Jupyter server extension proxies): Bokeh listens on a
  Unix socket inside a fresh directory of mode 0700 under ``$XDG_RUNTIME_DIR`` or
  ``<tmp>/rhapsody_lab-<uid>``: only this user (and root) can connect; no TCP port opens.
- TCP on a loopback address (the default, ``127.0.0.1`` and a free port): session ids
  are signed with a random per-server key and the server makes none itself, so a page
  without the signed id of ``.urls`` gets 403, and a websocket without a token signed
  with the key is closed before any message: the host's other users see no data. Tabs
  opening the same URL share its Bokeh session; keep the URLs off shared command lines.
- TCP on any other address: the caller must pass ``secret_key`` (>= 32 characters) and
  hands out ``.urls`` (signed with it, as ``bokeh.util.token.generate_session_id`` does);
  browsers reaching it by a host name also need that name in ``allow_websocket_origin``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import stat
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._net import free_port
from ..api.errors import SessionError
from ..observe.metrics import Metrics
from .components import COMPONENTS, Component, checked_plots, metrics_of, refresh

__all__ = ["DashboardServer", "dashboard_urls", "serve"]


#: the Origin the Jupyter proxy sends upstream on a Unix socket (browsers never reach one)
PROXY_ORIGIN = "rhapsody-lab.invalid"
_MIN_KEY = 32
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103  # sun_path, with NUL


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _private(path: Path) -> bool:
    """A real directory (not a link) owned by this user, closed to group and others."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o077)


def _private_base() -> Path:
    """This user's 0700 directory for dashboard sockets (created if needed, then checked)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _private(Path(xdg)):
        base = Path(xdg) / "rhapsody_lab"
    else:
        base = Path(tempfile.gettempdir()) / f"rhapsody_lab-{os.geteuid()}"
    try:
        base.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SessionError(f"cannot create the dashboard socket directory {base}: {exc}; "
                           "set TMPDIR or XDG_RUNTIME_DIR to a writable directory") from exc
    if not _private(base):
        raise SessionError(f"{base} is not a directory of mode 0700 owned by uid "
                           f"{os.geteuid()}: refusing to put a dashboard socket there "
                           "(remove it, or set TMPDIR/XDG_RUNTIME_DIR elsewhere)")
    return base


def _socket_path(unix_socket: Any) -> tuple[str, Path | None]:
    """The socket path, and the directory made for it (removed on ``stop()``)."""
    if unix_socket is True:
        made = Path(tempfile.mkdtemp(prefix="dash-", dir=_private_base()))
        path, owned = made / "bokeh.sock", made
    elif isinstance(unix_socket, str | os.PathLike):
        path, owned = Path(unix_socket).absolute(), None
        if not _private(path.parent):
            raise SessionError(f"unix_socket {str(path)!r}: its directory must be owned "
                               "by this user with mode 0700 (or pass unix_socket=True)")
    else:
        raise SessionError(f"unix_socket must be True or a path, got {unix_socket!r}")
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise SessionError(f"unix_socket path {str(path)!r} is too long for a socket "
                           "address; set TMPDIR or XDG_RUNTIME_DIR to a shorter directory")
    return str(path), owned


def _checked_key(secret_key: Any) -> bytes:
    if isinstance(secret_key, str):
        secret_key = secret_key.encode()
    if not isinstance(secret_key, bytes) or len(secret_key) < _MIN_KEY:
        got = (f"{len(secret_key)} characters" if isinstance(secret_key, bytes)
               else type(secret_key).__name__)
        raise SessionError(f"secret_key must be a str or bytes of at least {_MIN_KEY} "
                           f"characters (e.g. secrets.token_urlsafe(32)), got {got}")
    return secret_key


def _tick(ref: weakref.ref) -> None:
    component = ref()
    if component is not None:
        try:
            refresh(component.metrics, [component])
        except SessionError:  # the session (and its observer) closed: keep the last plot
            pass


class DashboardServer:
    """One Bokeh server, one app per plot name, on a private Unix socket or TCP ``address``.

    ``unix_socket=True`` (or a path in a 0700 directory of this user): no TCP port, and
    no signing (the directory is the lock). Else TCP, with signed session ids: a random
    key on loopback, ``secret_key`` required on any other address.
    """

    def __init__(self, metrics: Metrics, *, plots: Sequence[str] | None = None,
                 port: int = 0, address: str = "127.0.0.1", interval: float = 0.5,
                 prefix: str = "", allow_websocket_origin: Iterable[str] = (),
                 unix_socket: bool | str | os.PathLike | None = None,
                 secret_key: str | bytes | None = None):
        plots = checked_plots(plots or COMPONENTS, interval)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise SessionError(f"port must be an integer in 0..65535 (0: any free port), "
                               f"got {port!r}")
        if not isinstance(address, str) or not address:
            raise SessionError(f"address must be a host name or IP address, got {address!r}")
        self.metrics = metrics
        self.plots = plots
        self.interval = float(interval)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._extra_origins = list(allow_websocket_origin)
        self._live: dict[str, weakref.WeakSet] = {p: weakref.WeakSet() for p in plots}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._made_dir: Path | None = None
        self.socket_path: str | None = None
        self._secret: bytes | None = None
        if unix_socket not in (None, False):
            if secret_key is not None:
                raise SessionError("secret_key is for TCP servers; a unix_socket server "
                                   "is private to its directory's owner")
            self.socket_path, self._made_dir = _socket_path(unix_socket)
            self.address, self.port = "", 0
        else:
            if secret_key is None and not _is_loopback(address):
                raise SessionError(
                    f"address {address!r} is not a loopback address: anyone who can reach "
                    "it could read the plots. Pass secret_key=<at least 32 random "
                    "characters, e.g. secrets.token_urlsafe(32)> (browsers then need the "
                    "signed .urls) and allow_websocket_origin=['<host>:<port>'], or serve "
                    "on 127.0.0.1 / unix_socket=True")
            from bokeh.util.token import generate_secret_key
            self._secret = (_checked_key(secret_key) if secret_key is not None
                            else generate_secret_key().encode())
            self.address = address
            self.port = port or free_port(address)
        self._urls = self._make_urls()
        self._thread = threading.Thread(target=self._run, name="rhapsody-dashboard",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self._remove_socket_dir()
            where = self.socket_path or f"{address}:{self.port}"
            raise SessionError(f"could not start the dashboard server on {where}: "
                               f"{self._error}") from self._error

    def _make_urls(self) -> dict[str, str]:
        if self.socket_path is not None:  # curl --unix-socket, requests-unixsocket style
            base = f"http+unix://{quote(self.socket_path, safe='')}{self.prefix}"
            return {p: f"{base}/{p}" for p in self.plots}
        from bokeh.util.token import generate_session_id
        host = f"[{self.address}]" if ":" in self.address else self.address
        base = f"http://{host}:{self.port}{self.prefix}"
        return {p: f"{base}/{p}?bokeh-session-id="
                   f"{generate_session_id(secret_key=self._secret, signed=True)}"
                for p in self.plots}

    def _make_doc(self, plot: str, doc: Any) -> None:
        component = COMPONENTS[plot](self.metrics)
        component.update()
        self._live[plot].add(component)
        doc.add_root(component.root)
        doc.title = f"rhapsody_lab {plot}"
        doc.add_periodic_callback(partial(_tick, weakref.ref(component)),
                                  int(self.interval * 1000))
        doc._rhapsody_component = component  # the document keeps it alive, not the callback

    def _run(self) -> None:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
        from tornado.ioloop import IOLoop
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            apps = {f"/{p}": Application(FunctionHandler(partial(self._make_doc, p)))
                    for p in self.plots}
            if self.socket_path is not None:
                where: dict[str, Any] = {
                    "unix_socket": self.socket_path, "sign_sessions": False,
                    "allow_websocket_origin": [PROXY_ORIGIN, *self._extra_origins]}
            else:
                where = {"port": self.port, "address": self.address,
                         "allow_websocket_origin": [f"{self.address}:{self.port}",
                                                    f"localhost:{self.port}",
                                                    *self._extra_origins],
                         "secret_key": self._secret, "sign_sessions": True,
                         "generate_session_ids": False}
            self._server = Server(apps, io_loop=IOLoop.current(), prefix=self.prefix,
                                  **where)
            self._server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def urls(self) -> dict[str, str]:
        """Plot name -> URL of its app: signed (``?bokeh-session-id=``) on TCP, where a
        URL without it is refused; ``http+unix://<quoted socket path>/...`` on a socket."""
        return dict(self._urls)

    def components(self, plot: str) -> list[Component]:
        """Live components of ``plot`` (one per open browser session)."""
        return list(self._live[plot])

    def stop(self) -> None:
        """Stop the server and its thread."""
        loop, server = self._loop, self._server
        if loop is None or loop.is_closed():
            self._remove_socket_dir()
            return

        def _stop() -> None:
            if server is not None:
                server.stop()
                server.io_loop.stop()
            loop.stop()

        try:
            loop.call_soon_threadsafe(_stop)
        except RuntimeError:
            return
        finally:
            self._thread.join(10)
            self._remove_socket_dir()

    def _remove_socket_dir(self) -> None:
        made, self._made_dir = self._made_dir, None
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)

    def __repr__(self) -> str:
        where = (f"unix:{self.socket_path} {self.prefix or '/'}" if self.socket_path
                 else f"http://{self.address}:{self.port}{self.prefix}")
        return f"<DashboardServer {where} {self.plots}>"


_servers: dict[int, tuple[weakref.ref, DashboardServer]] = {}


def serve(target: Any, **options: Any) -> DashboardServer:
    """Start a dashboard server for a Session (or Metrics); ``options`` as for the class
    (``unix_socket=True``: a private socket; a non-loopback ``address`` needs
    ``secret_key``)."""
    return DashboardServer(metrics_of(target), **options)


def dashboard_urls(session: Any, **options: Any) -> dict[str, str]:
    """Plot name -> URL, starting one server per session on first call (then reused)."""
    key = id(session)
    hit = _servers.get(key)
    if hit is not None and hit[0]() is session:
        return hit[1].urls
    server = serve(session, **options)
    try:
        ref = weakref.ref(session, lambda _r: _servers.pop(key, (None, server))[1].stop())
    except TypeError:  # a Metrics without weakref support: keep it for the process
        ref = (lambda s: (lambda: s))(session)
    _servers[key] = (ref, server)
    return server.urls
