"""A real ORBIT broker and rhapsody_lab endpoints on 127.0.0.1, for the orbit tests.

The broker is ``radical.orbit``'s own (``radical-orbit-broker.py``) with a self-signed
certificate made here and an ingress token; endpoints are ``python -m
rhapsody_lab.backends.orbit_endpoint`` processes, each in its own process group so a test
can kill one with whatever it runs. ``HOME`` of both points into the site's folder, so
their logs and ``~/.radical`` stay there.
"""

from __future__ import annotations

import datetime
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "broker_cert.pem", folder / "broker_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class OrbitSite:
    """A broker process and the endpoints started on it."""

    folder: Path
    url: str = ""
    cert: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    broker: subprocess.Popen | None = None
    endpoints: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _env(self, log: str) -> dict[str, str]:
        env = dict(os.environ, HOME=str(self.folder),
                   RADICAL_ORBIT_LOG_FILE=str(self.folder / f"{log}.log"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                          env.get("PYTHONPATH")]))
        for var in ("RADICAL_ORBIT_BROKER_URL", "RADICAL_ORBIT_BROKER_TOKEN",
                    "RADICAL_ORBIT_BROKER_CERT"):
            env.pop(var, None)
        return env

    def start_broker(self, timeout: float = 30.0) -> None:
        cert, key = _self_signed(self.folder)
        self.cert = str(cert)
        port = _free_port()
        self.url = f"https://127.0.0.1:{port}"
        script = Path(sys.executable).parent / "radical-orbit-broker.py"
        out = open(self.folder / "broker.out", "w")  # noqa: SIM115 (the process keeps it)
        self.broker = subprocess.Popen(
            [sys.executable, str(script), "--cert", str(cert), "--key", str(key),
             "--host", "127.0.0.1", "--port", str(port), "--token", self.token,
             "--no-gateway", "--plugins", ""],
            env=self._env("broker"), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.broker.poll() is not None:
                raise RuntimeError("ORBIT broker exited: "
                                   + (self.folder / "broker.out").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"ORBIT broker did not listen on {port} within {timeout} s")

    def start_endpoint(self, name: str, timeout: float = 60.0) -> subprocess.Popen:
        err = open(self.folder / f"{name}.err", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "rhapsody_lab.backends.orbit_endpoint", "--url", self.url,
             "--cert", self.cert, "--token", self.token, "--name", name,
             "--timeout", str(timeout)],
            env=self._env(name), stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True, cwd=self.folder)
        line = proc.stdout.readline().strip()
        if line != f"ready {name}":
            proc.kill()
            proc.wait()
            raise RuntimeError(f"endpoint {name} did not start ({line!r}): "
                               + (self.folder / f"{name}.err").read_text()[-2000:])
        self.endpoints[name] = proc
        return proc

    def kill_endpoint(self, name: str) -> None:
        """SIGKILL an endpoint and every process under it (a lost node)."""
        proc = self.endpoints.pop(name)
        below = _descendants(proc.pid)
        _signal_group(proc, signal.SIGKILL)
        for pid in below:  # tasks run in sessions of their own, outside its group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    def stop(self) -> None:
        for proc in [*self.endpoints.values(), self.broker]:
            if proc is None:
                continue
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
            _signal_group(proc, signal.SIGKILL)  # whatever it left in its group
        self.endpoints.clear()
        self.broker = None


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (from /proc), children before grandchildren."""
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
