"""This interpreter's child processes, for the tests that check nothing is left behind.

Only conftest files and modules whose functions never run in another interpreter may
import this: a Dask or Slurm worker imports a test module by name, without tests/ on its
path.
"""

from __future__ import annotations

import os


def child_processes(*, zombies: bool = False) -> dict[int, str]:
    """This interpreter's child processes: pid -> command line (zombies only if asked)."""
    me, found = str(os.getpid()), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, parent = f.read().rsplit(")", 1)[1].split()[:2]
            if parent != me or (state == "Z" and not zombies):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[int(pid)] = f.read().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
    return found
