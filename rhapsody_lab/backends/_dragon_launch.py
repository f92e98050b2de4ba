"""Starting one long-lived Dragon process outside a task: nodes, host placement, clean-up.

Registered as the ``"services.dragon"`` provider (``rhapsody_lab.api.extensions``): with
it the engine's ``rhapsody_lab.api.services`` places a service (an inference server)
through the Dragon runtime without importing a backend. Everything here blocks on Dragon's
global services, so callers run it in a thread. The process's output goes to a file on the
node it runs on (appended, stderr merged), and its environment carries a token so that the
children it leaves behind (vLLM's engine core) can be found and ended on that node.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..api import extensions
from ..api.errors import ResourceError
from ._dragon_spec import NodeInfo

__all__ = ["TOKEN_ENV", "child_env", "kill_tagged", "runtime_nodes", "start_process",
           "stop_process"]

#: set in a service's environment; every process that inherits it belongs to the service
TOKEN_ENV = "RHAPSODY_SERVICE_TOKEN"


def runtime_nodes() -> list[NodeInfo]:
    """The nodes of the Dragon runtime this process runs under."""
    from dragon.native.machine import Node, System
    nodes = []
    for h in System().nodes:
        node = Node(h)
        nodes.append(NodeInfo(node.hostname, node.h_uid, frozenset(node.cpus or ()),
                              frozenset(node.gpus or ())))
    return nodes


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment plus ``extra``, without the caller's own Dragon variables.

    Local services give each process its own ``DRAGON_*`` channels and puid; passing the
    caller's would make the child talk through the caller's infrastructure channels.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGON_")}
    env.update(extra)
    return env


def start_process(command: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
                  log_file: str, host: str | None, who: str) -> tuple[Any, str]:
    """Start ``command`` as a Dragon process; return it and the hostname it was placed on.

    ``host`` pins the node (``ResourceError`` naming it if it is not a node of the runtime);
    ``None`` lets the runtime's default policy choose.
    """
    from dragon.infrastructure.policy import Policy
    from dragon.native.process import Process, ProcessTemplate
    nodes = runtime_nodes()
    policy = None
    if host is not None:
        if host not in {n.hostname for n in nodes}:
            raise ResourceError(None, "node", f"service {who!r}: host {host!r} is not a node of "
                                f"this Dragon runtime (nodes: {[n.hostname for n in nodes]})")
        policy = Policy(placement=Policy.Placement.HOST_NAME, host_name=host)
    # The shell points the command's stdout/stderr at the log itself. Dragon's own file
    # output goes through a pipe that local services drain when the process dies: a child
    # that outlives it (vLLM's engine core) holds the pipe open and stalls that node's
    # death watcher, so exits are not seen (measured with Dragon 0.15).
    argv = ["-c", 'exec "$@" >>"$RHAPSODY_SERVICE_LOG" 2>&1', "sh", *command]
    proc = Process("/bin/sh", argv, cwd=cwd or ".",
                   env={**env, "RHAPSODY_SERVICE_LOG": log_file}, stdin=None,
                   stdout=ProcessTemplate.DEVNULL, stderr=ProcessTemplate.DEVNULL,
                   policy=policy)
    proc.start()
    by_huid = {n.h_uid: n.hostname for n in nodes}
    placed = by_huid.get(proc.h_uid)
    if placed is None:  # a node that joined after we listed them
        from dragon.native.machine import Node
        placed = Node(proc.h_uid).hostname
    return proc, placed


def stop_process(proc: Any, grace: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (None if unknown)."""
    code = None
    try:
        if proc.is_alive:
            proc.terminate()
            code = proc.join(grace)
            if code is None:
                proc.kill()
                code = proc.join(5)
        else:
            code = proc.returncode
    except Exception:  # already gone from the runtime, or the runtime is going down
        pass
    return code


def kill_tagged(token: str, hostname: str, sig: int = signal.SIGKILL) -> None:
    """End every process of node ``hostname`` whose environment holds the service token."""
    if hostname in _this_node():
        if kill_tagged_here(token, sig) and sig == signal.SIGKILL:
            # a large process (vLLM's engine) takes a while to die: close() returns when
            # it is gone, so "nothing left behind" holds when the caller looks
            deadline = time.monotonic() + 10
            while kill_tagged_here(token, 0) and time.monotonic() < deadline:
                time.sleep(0.05)
        return
    try:  # another node: run the same scan there as a short Dragon process
        from dragon.infrastructure.policy import Policy
        from dragon.native.process import Process
        p = Process(sys.executable, ["-m", __name__, token, str(int(sig))],
                    env=child_env({}), stdout=Process.DEVNULL, stderr=Process.DEVNULL,
                    policy=Policy(placement=Policy.Placement.HOST_NAME, host_name=hostname))
        p.start()
        p.join(10)
    except Exception:
        pass


def _this_node() -> set[str]:
    names = {socket.gethostname(), "localhost", "127.0.0.1"}
    try:
        from dragon.native.machine import current
        names.add(current().hostname)
    except Exception:
        pass
    return names


def kill_tagged_here(token: str, sig: int = signal.SIGKILL) -> list[int]:
    """Signal the processes of this node that carry ``TOKEN_ENV=token``; their pids."""
    needle = f"{TOKEN_ENV}={token}".encode()
    me = os.getpid()
    hit = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            os.kill(int(name), sig)
            hit.append(int(name))
        except OSError:
            continue
    return hit


extensions.register_provider("services.dragon", sys.modules[__name__])

if __name__ == "__main__":  # python -m rhapsody_lab.backends._dragon_launch TOKEN SIG
    kill_tagged_here(sys.argv[1], int(sys.argv[2]))
