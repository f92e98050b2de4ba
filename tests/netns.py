"""Network namespaces as stand-in nodes: a bridge in the root namespace, a veth per node.

Each namespace has its own network stack on 10.77.<subnet>.0/24 (the project's test
addresses); processes started in one see the others only over the bridge. Only tests
import this (workers started by ``Net.run`` get ``tests/`` on their path).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def _netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=10)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"rlprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns does not work here: {exc}"
    return None


class Net:
    """A bridge in the root namespace and one namespace per role, each on one veth."""

    def __init__(self, tag: str, subnet: int):
        self.tag, self.prefix = tag, f"10.77.{subnet}"
        self.bridge = f"rlbr{tag}"
        self.namespaces: dict[str, str] = {}   # role -> namespace
        self.addresses: dict[str, str] = {}    # role -> address
        self.procs: list[subprocess.Popen] = []

    def up(self, roles: list[str]) -> None:
        self.clear_stale(roles)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n, role in enumerate(roles, start=10):
            ns, veth = f"rl{role}{self.tag}", f"rlv{role}{self.tag}"
            _ip("netns", "add", ns)
            self.namespaces[role] = ns
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            addr = f"{self.prefix}.{n}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.addresses[role] = addr

    def clear_stale(self, roles: list[str]) -> None:
        """Remove what a killed earlier run with the same tag left (our names only)."""
        stale = list_netns()
        for role in roles:
            ns = f"rl{role}{self.tag}"
            if ns in stale:
                for pid in _netns_pids(ns):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", f"rlv{role}{self.tag}"], capture_output=True,
                           timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)

    def run(self, role: str, argv: list[str], log: str) -> subprocess.Popen:
        path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
        env = dict(os.environ, PYTHONPATH=path)
        with open(log, "ab") as out:
            p = subprocess.Popen(["ip", "netns", "exec", self.namespaces[role], *argv],
                                 cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def kill(self, role: str) -> list[int]:
        """SIGKILL every process of ``role``'s namespace: that node is gone."""
        pids = _netns_pids(self.namespaces[role])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def down(self) -> None:
        for role in self.namespaces:
            self.kill(role)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces.values():  # takes its end of the veth (and the pair) along
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for role in self.namespaces:
            subprocess.run(["ip", "link", "del", f"rlv{role}{self.tag}"], capture_output=True,
                           timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)


def list_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
