"""What a validated policy is: its shares of the allocation, its routing rules, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..api.errors import SessionError
from ..resources import Allocation

__all__ = ["BACKEND_TYPES", "BackendShare", "Policy", "PolicyError", "Rule"]

#: policy ``type`` -> task kinds it runs (known without importing any runtime)
BACKEND_TYPES: dict[str, frozenset[str]] = {
    "concurrent": frozenset({"function", "executable"}),
    "processes": frozenset({"function", "executable"}),
    "dask": frozenset({"function", "executable"}),
    "dask-slurm": frozenset({"function", "executable"}),
    "dragon": frozenset({"function", "executable"}),
    "flux": frozenset({"function", "executable"}),
    "radical": frozenset({"function", "executable"}),
    "vllm": frozenset({"ai"}),
    "dragon-vllm": frozenset({"ai"}),
}
_INFERENCE = ("vllm", "dragon-vllm")
_KINDS = ("function", "executable", "ai")
_TOP_KEYS = ("backends", "routing", "default", "version", "description")
_BACKEND_KEYS = ("type", "nodes", "cores", "gpus", "options", "priority", "limit")
_RULE_KEYS = ("backend", "kind", "tags", "min_cores", "min_gpus", "min_ranks")



class PolicyError(SessionError):
    """A policy is invalid; ``key`` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


@dataclass(frozen=True)
class BackendShare:
    """One backend of a policy and the part of the allocation it owns."""

    name: str
    type: str
    nodes: tuple[str, ...]      # whole nodes owned (empty: cores from the shared pool)
    cores: int
    gpus: int
    options: dict = field(default_factory=dict)
    priority: int = 0
    limit: int | None = None    # max tasks in flight on it (None: no limit)

    @property
    def kinds(self) -> frozenset[str]:
        return BACKEND_TYPES[self.type]


@dataclass(frozen=True)
class Rule:
    """Tasks matching every given criterion go to the first fitting backend of ``backends``."""

    index: int
    backends: tuple[str, ...]
    kinds: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    min_cores: int = 0
    min_gpus: int = 0
    min_ranks: int = 0

    def matches(self, kind: str, tags: frozenset[str], cores: int, gpus: int,
                ranks: int) -> bool:
        return ((self.kinds is None or kind in self.kinds)
                and (self.tags is None or not self.tags.isdisjoint(tags))
                and cores >= self.min_cores and gpus >= self.min_gpus
                and ranks >= self.min_ranks)


@dataclass(frozen=True)
class Policy:
    """A validated policy, its shares resolved against ``allocation``."""

    backends: dict[str, BackendShare]
    rules: tuple[Rule, ...]
    default: str | None
    allocation: Allocation
    source: str = "<dict>"

    def summary(self) -> str:
        rows = [f"policy {self.source} on {self.allocation}"]
        for b in self.backends.values():
            extra = f" nodes={list(b.nodes)}" if b.nodes else ""
            lim = f" limit={b.limit}" if b.limit else ""
            rows.append(f"  {b.name}: {b.type} cores={b.cores} gpus={b.gpus}{extra} "
                        f"priority={b.priority}{lim}")
        return "\n".join(rows)
