"""What this job may use: ``Allocation.detect()`` reads Slurm, PBS or the local machine.

Standard library only, no external commands: Slurm node lists such as ``n[01-03,07]`` and
CPU counts such as ``36(x2),72`` are expanded here rather than with ``scontrol``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from .api.errors import ResourceError

__all__ = ["Allocation", "expand_counts", "expand_nodelist"]


@dataclass(frozen=True)
class Allocation:
    """Nodes, cores and GPUs available to this job (``source``: slurm, pbs or local)."""

    nodes: tuple[str, ...]
    cores_per_node: tuple[int, ...]
    gpus_per_node: tuple[int, ...]
    source: str = "local"
    job_id: str | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def cores(self) -> int:
        """Total cores of the allocation."""
        return sum(self.cores_per_node)

    @property
    def gpus(self) -> int:
        """Total GPUs of the allocation."""
        return sum(self.gpus_per_node)

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> Allocation:
        """The allocation of the current Slurm/PBS job, else of the local machine."""
        env = os.environ if environ is None else environ
        if env.get("SLURM_JOB_ID"):
            return _from_slurm(env)
        if env.get("PBS_JOBID") and env.get("PBS_NODEFILE"):
            return _from_pbs(env)
        return _local(env)

    def __str__(self) -> str:
        where = f"{self.source} job {self.job_id}" if self.job_id else self.source
        return (f"{where}: {self.n_nodes} node(s), {self.cores} cores, {self.gpus} GPUs "
                f"({', '.join(self.nodes[:4])}{', ...' if self.n_nodes > 4 else ''})")


# -- Slurm ---------------------------------------------------------------------------
def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: ``a[1,2],b`` -> ``['a[1,2]', 'b']``."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ResourceError(None, "nodes", f"unbalanced brackets in node list {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str, text: str) -> list[str]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if "-" in item:
            lo, hi = item.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ResourceError(None, "nodes", f"bad range {item!r} in node list {text!r}")
            width = len(lo)
            out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        elif item.isdigit():
            out.append(item)
        else:
            raise ResourceError(None, "nodes", f"bad index {item!r} in node list {text!r}")
    return out


def expand_nodelist(text: str) -> list[str]:
    """Expand a Slurm host list: ``n[01-03],gpu[1,4]-ib`` -> ``n01 n02 n03 gpu1-ib gpu4-ib``."""
    if not text:
        return []
    nodes: list[str] = []
    for part in _split_top(text):
        names = [""]
        for m in re.finditer(r"([^\[\]]+)|\[([^\]]*)\]", part):
            literal, ranges = m.group(1), m.group(2)
            if literal is not None:
                names = [n + literal for n in names]
            else:
                names = [n + i for n in names for i in _expand_range(ranges, text)]
        nodes.extend(names)
    return nodes


def expand_counts(text: str) -> list[int]:
    """Expand Slurm per-node counts: ``36(x2),72`` -> ``[36, 36, 72]``."""
    out: list[int] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item)
        if m is None:
            raise ResourceError(None, "cores", f"cannot read per-node count {item!r} in "
                                f"{text!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _gpu_count(text: str) -> int:
    """GPUs in a Slurm GRES-like value: ``2``, ``a100:2``, ``gpu:a100:2,gpu:v100:1``."""
    total = 0
    for item in text.split(","):
        last = item.strip().split(":")[-1]
        m = re.match(r"\d+", last)
        if m:
            total += int(m.group())
        elif item.strip():
            total += 1  # a type without a count means one
    return total


def _from_slurm(env: Mapping[str, str]) -> Allocation:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    nodes = expand_nodelist(nodelist) or [socket.gethostname()]
    n = len(nodes)
    counts = expand_counts(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
    if len(counts) != n:
        per = env.get("SLURM_CPUS_ON_NODE")
        if per and per.isdigit():
            counts = [int(per)] * n
        elif counts:
            counts = (counts * n)[:n]
        else:
            counts = [_local_cores()] * n
    if env.get("SLURM_GPUS_PER_NODE"):
        gpus = [_gpu_count(env["SLURM_GPUS_PER_NODE"])] * n
    elif env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        gpus = [int(env["SLURM_GPUS_ON_NODE"])] * n
    elif env.get("SLURM_JOB_GPUS"):
        gpus = [len([g for g in env["SLURM_JOB_GPUS"].split(",") if g.strip()])] * n
    elif env.get("SLURM_GPUS"):
        total = _gpu_count(env["SLURM_GPUS"])
        gpus = [total // n + (1 if i < total % n else 0) for i in range(n)]
    else:
        gpus = [0] * n
    return Allocation(tuple(nodes), tuple(counts), tuple(gpus), "slurm", env["SLURM_JOB_ID"])


# -- PBS and the local machine ---------------------------------------------------------
def _from_pbs(env: Mapping[str, str]) -> Allocation:
    per: dict[str, int] = {}
    with open(env["PBS_NODEFILE"]) as f:
        for line in f:
            host = line.strip()
            if host:
                per[host] = per.get(host, 0) + 1
    gpus = int(env.get("PBS_NGPUS", "0") or 0) if env.get("PBS_NGPUS", "").isdigit() else 0
    return Allocation(tuple(per), tuple(per.values()), tuple([gpus] * len(per)), "pbs",
                      env["PBS_JOBID"])


def _local_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _local_gpus(env: Mapping[str, str]) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len([d for d in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", d)])
    except OSError:
        return 0


def _local(env: Mapping[str, str]) -> Allocation:
    return Allocation((socket.gethostname(),), (_local_cores(),), (_local_gpus(env),), "local")
