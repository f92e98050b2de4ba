"""Where kernels announce their live sessions to the Jupyter server: one JSON file each.

A kernel with an open session writes ``<dir>/<key>.json`` (``key`` = ``<pid>-<uid>``,
unique across kernels) about once a second and removes it when the session closes; the
server extension reads the directory. An entry whose process is gone is pruned, one not
refreshed for ``STALE_AFTER`` seconds is ignored (a frozen or recycled pid). Standard
library only: the kernel side imports this without Jupyter, Bokeh or Tornado.

The directory is ``$RHAPSODY_LAB_REGISTRY_DIR`` when set (the server extension sets it in
its own environment, which the kernels it starts inherit), else
``<jupyter runtime dir>/rhapsody_lab`` computed as ``jupyter_core`` does.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..api.errors import SessionError

__all__ = [
    "ENV_BASE_URL",
    "ENV_DIR",
    "PROXY_ROOT",
    "STALE_AFTER",
    "checked_socket",
    "dashboard_prefix",
    "entry_key",
    "read_entries",
    "registry_dir",
    "remove_entry",
    "write_entry",
]

ENV_DIR = "RHAPSODY_LAB_REGISTRY_DIR"
#: set by the server extension: the Jupyter server's base URL; a kernel that sees it
#: starts its session's dashboard behind that server's proxy
ENV_BASE_URL = "RHAPSODY_LAB_BASE_URL"
PROXY_ROOT = "rhapsody-lab/dashboard"  # under the server's base URL
STALE_AFTER = 30.0  # seconds without a refresh before an entry is ignored
VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _runtime_dir() -> Path:
    """``jupyter_core.paths.jupyter_runtime_dir()`` without importing jupyter_core."""
    if os.environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(os.environ["JUPYTER_RUNTIME_DIR"])
    if os.environ.get("JUPYTER_DATA_DIR"):
        return Path(os.environ["JUPYTER_DATA_DIR"]) / "runtime"
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Jupyter" / "runtime"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", home)) / "jupyter" / "runtime"
    xdg = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(xdg) / "jupyter" / "runtime"


def registry_dir(directory: str | os.PathLike | None = None) -> Path:
    """The registry directory: ``directory``, else ``$RHAPSODY_LAB_REGISTRY_DIR``, else
    ``<jupyter runtime dir>/rhapsody_lab``."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else _runtime_dir() / "rhapsody_lab"


def entry_key(pid: int, uid: str) -> str:
    """The URL-safe key of a session: unique across kernels (uids repeat between them)."""
    return f"{pid}-{_SAFE.sub('_', uid)}"


def dashboard_prefix(base_url: str, key: str) -> str:
    """The path the session's Bokeh server lives under, as the proxy forwards it."""
    base = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    return f"{base}{PROXY_ROOT}/{key}"


def checked_socket(path: Any) -> str:
    """``path`` (a registered dashboard socket) resolved, if it is a socket owned by this
    user in a directory owned by this user with mode 0700; else ``SessionError``.

    The registry directory may be shared or writable by others: an entry must not lead
    the proxy to someone else's socket. Inside such a directory only its owner (us) can
    add, swap or link files, so the check holds until the connection is made.
    """
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        raise SessionError(f"dashboard socket must be an absolute path, got {path!r}")
    real = os.path.realpath(path)
    me = os.geteuid()
    try:
        parent, sock = os.lstat(os.path.dirname(real)), os.lstat(real)
    except OSError as exc:
        raise SessionError(f"dashboard socket {path!r} is not there: {exc}") from exc
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != me or parent.st_mode & 0o077:
        raise SessionError(f"dashboard socket {path!r}: its directory is not owned by uid "
                           f"{me} with mode 0700 (mode {oct(parent.st_mode & 0o777)}, "
                           f"owner {parent.st_uid}); refusing to connect")
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != me:
        raise SessionError(f"dashboard socket {path!r} is not a socket owned by uid {me}")
    return real


def write_entry(entry: dict[str, Any], directory: str | os.PathLike | None = None) -> Path:
    """Write (atomically replace) the entry of ``entry['key']``; returns its path."""
    key = entry.get("key")
    if not isinstance(key, str) or not key or _SAFE.search(key):
        raise SessionError(f"registry entry key must match [A-Za-z0-9._-]+, got {key!r}")
    d = registry_dir(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = dict(entry, version=VERSION, updated=time.time())
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, d / f"{key}.json")
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return d / f"{key}.json"


def remove_entry(key: str, directory: str | os.PathLike | None = None) -> None:
    """Remove the entry of ``key`` (no error if it is gone)."""
    try:
        (registry_dir(directory) / f"{key}.json").unlink()
    except FileNotFoundError:
        pass


def _alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now: not our kernel
        return False
    return True


def read_entries(directory: str | os.PathLike | None = None, *, prune: bool = True,
                 now: float | None = None) -> dict[str, dict[str, Any]]:
    """Live entries by key: unreadable files skipped, dead processes' files pruned,
    entries older than ``STALE_AFTER`` seconds ignored."""
    d = registry_dir(directory)
    now = time.time() if now is None else now
    found: dict[str, dict[str, Any]] = {}
    try:
        paths = sorted(d.glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or not ours
        if not isinstance(entry, dict) or entry.get("key") != path.stem:
            continue
        if not _alive(entry.get("pid")):
            if prune:
                try:
                    path.unlink()
                except OSError:
                    pass
            continue
        updated = entry.get("updated")
        if not isinstance(updated, int | float) or now - updated > STALE_AFTER:
            continue
        found[path.stem] = entry
    return found
