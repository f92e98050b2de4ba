"""A Flux instance of the backend's own: ``flux start --test-size=N`` as a managed child.

Its initial program prints ``$FLUX_URI`` and then reads its stdin, which is this process's
pipe: closing it (``stop``) ends the program, so the instance shuts down the ordinary way;
if this process dies the pipe closes too, and nothing outlives it for long. The broker
starts in a session of its own; after it ends, every process still in that session (a job
shell orphaned by a killed broker) is killed, so nothing is left behind.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time

from ._flux_env import FluxInstall, broker_env

__all__ = ["ManagedBroker", "session_pids"]

_PROGRAM = 'printf "%s\\n" "$FLUX_URI"; exec cat >/dev/null'

#: inactive jobs the instance keeps in its KVS (``flux jobs -a`` shows these). Flux keeps
#: every job by default: at 10,000 null jobs the broker held 1.6 GB. The backend has all it
#: needs of a job once it is inactive (outputs go to files), so its own instance purges.
KEEP_INACTIVE = 1000


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (a managed broker's, its jobs included)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(name))
    return pids


class ManagedBroker:
    """One ``flux start --test-size=size`` instance, started and ended by this process."""

    def __init__(self, inst: FluxInstall, size: int, start_timeout: float = 60.0,
                 keep_inactive: int = KEEP_INACTIVE):
        self.inst = inst
        self.keep_inactive = keep_inactive
        self.size = size
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.uri: str | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> str:
        """Start the instance (blocking) and return its URI; RuntimeError if it fails."""
        cmd = [self.inst.flux, "start", f"--test-size={self.size}",
               f"--conf=job-manager.inactive-num-limit={self.keep_inactive}",
               "/bin/sh", "-c", _PROGRAM]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=broker_env(self.inst),
                                     start_new_session=True, cwd="/")
        out = self.proc.stdout
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([out], [], [], max(0.0, left))
            if not ready:
                tail = self._tail()
                self.stop()
                raise RuntimeError(f"flux start gave no URI within {self.start_timeout:.0f}s"
                                   f"{tail}")
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                self.proc.wait(5)
                tail = self._tail()
                self.stop()
                raise RuntimeError(f"flux start exited before the instance was up{tail}")
            line += chunk
        self.uri = line.decode().strip()
        return self.uri

    def broker_pids(self) -> list[int]:
        """The ``flux-broker`` processes of the instance (children of ``flux start``)."""
        if self.proc is None:
            return []
        found = []
        for pid in session_pids(self.proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
            except OSError:
                continue
            if argv0.endswith(b"flux-broker"):
                found.append(pid)
        return found

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """End the instance: close the program's stdin, then kill what is left (blocking)."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_session(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _signal_session(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.kill_leftovers()
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()

    def kill_leftovers(self) -> None:
        """SIGKILL every process still in the broker's session (orphaned job shells)."""
        if self.proc is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not _signal_session(self.proc.pid, signal.SIGKILL):
                return
            time.sleep(0.05)

    def _tail(self) -> str:
        if self._log.closed:
            return ""
        try:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f": {text[-600:]}" if text else ""


def _signal_session(sid: int, sig: int) -> bool:
    """Send ``sig`` to every process of session ``sid``; whether there was any."""
    pids = session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return bool(pids)
