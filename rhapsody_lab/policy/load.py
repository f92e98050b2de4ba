"""Reading a policy and checking it against the allocation before any backend exists."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..resources import Allocation
from .model import (
    _BACKEND_KEYS,
    _INFERENCE,
    _KINDS,
    _RULE_KEYS,
    _TOP_KEYS,
    BACKEND_TYPES,
    BackendShare,
    Policy,
    PolicyError,
    Rule,
)

__all__ = ["load_policy"]


def _read(source: str | os.PathLike) -> dict:
    path = os.fspath(source)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError("", f"policy file {path!r} cannot be read: {exc}") from exc
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml  # only for YAML files: the engine stays standard-library only
        except ImportError as exc:
            raise PolicyError("", f"policy file {path!r} is YAML but PyYAML is not "
                              "installed; pip install pyyaml, or write the policy as "
                              "JSON") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError("", f"policy file {path!r} is not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PolicyError("", f"policy file {path!r} is not valid JSON ({exc}); YAML "
                              "files must end in .yaml or .yml") from exc
    if not isinstance(data, dict):
        raise PolicyError("", f"policy file {path!r} must hold a mapping with a "
                          f"'backends' key, got {type(data).__name__}")
    return data


def load_policy(source: str | os.PathLike | Mapping, allocation: Allocation | None = None
                ) -> Policy:
    """Read and validate a policy (path or mapping) against ``allocation`` (default: detected).

    Raises ``PolicyError`` naming the offending key; nothing is started.
    """
    if isinstance(source, Mapping):
        data, name = dict(source), "<dict>"
    elif isinstance(source, str | os.PathLike):
        data, name = _read(source), os.fspath(source)
    else:
        raise PolicyError("", f"a policy is a file path or a dict, got "
                          f"{type(source).__name__}")
    if allocation is None:
        allocation = Allocation.detect()
    elif not isinstance(allocation, Allocation):
        raise PolicyError("", f"allocation must be an Allocation (Allocation.detect()), "
                          f"got {type(allocation).__name__}")
    _known_keys(data, _TOP_KEYS, "", "a policy")
    raw = data.get("backends")
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyError("backends", "must be a non-empty mapping of backend name to "
                          "{type: ..., cores: ...}, got " + repr(raw))
    shares = _resolve_shares(raw, allocation)
    rules = _parse_rules(data.get("routing"), shares)
    default = data.get("default")
    if default is not None and default not in shares:
        raise PolicyError("default", f"{default!r} is not a backend of this policy "
                          f"(backends: {', '.join(shares)})")
    return Policy(shares, rules, default, allocation, name)


# -- shares ----------------------------------------------------------------------------
def _amount(key: str, value: Any, total: int, what: str) -> int:
    """An absolute count, a fraction in (0, 1] or 'N%' of ``total`` -> a count."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            pct = math.nan
        if not 0 < pct <= 100:
            raise PolicyError(key, f"{value!r} must be a percentage in (0%, 100%]")
        value = pct / 100
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(key, f"expected a count (e.g. 2), a fraction (e.g. 0.5) or a "
                          f"percentage (e.g. '50%'), got {value!r}")
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise PolicyError(key, f"a fraction must be in (0, 1], got {value!r}; write "
                              "whole counts as integers")
        count = math.floor(value * total + 1e-9)
        if count < 1:
            raise PolicyError(key, f"{value!r} of the allocation's {total} {what} is less "
                              f"than one; give a count or a larger fraction")
        return count
    if value < 0:
        raise PolicyError(key, f"must be >= 0, got {value!r}")
    if value > total:
        raise PolicyError(key, f"{value} exceeds the allocation's {total} {what}")
    return value


def _int_opt(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PolicyError(key, f"must be an integer >= {low}, got {value!r}")
    return value


def _known_keys(spec: Mapping, allowed: Sequence[str], where: str, what: str) -> None:
    """Refuse the first key of ``spec`` not in ``allowed``, naming its path."""
    for k in spec:
        if k not in allowed:
            raise PolicyError(f"{where}.{k}" if where else str(k),
                              f"unknown key; {what} has {', '.join(allowed)}")


def _resolve_shares(raw: Mapping, alloc: Allocation) -> dict[str, BackendShare]:
    entries: dict[str, dict] = {}
    for name, spec in raw.items():
        key = f"backends.{name}"
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise PolicyError(key, "a backend name is a non-empty string without spaces")
        if not isinstance(spec, Mapping):
            raise PolicyError(key, f"must be a mapping like {{type: concurrent, cores: 1}}, "
                              f"got {spec!r}")
        _known_keys(spec, _BACKEND_KEYS, key, "a backend")
        btype = spec.get("type")
        if btype not in BACKEND_TYPES:
            raise PolicyError(f"{key}.type", f"unknown backend type {btype!r}; one of "
                              f"{', '.join(BACKEND_TYPES)}")
        options = spec.get("options") or {}
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise PolicyError(f"{key}.options", f"must be a mapping of constructor keyword "
                              f"to value, got {options!r}")
        if "name" in options:
            raise PolicyError(f"{key}.options.name", "the backend's name is its key in "
                              "'backends'; remove options.name")
        priority = spec.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PolicyError(f"{key}.priority", f"must be an integer (higher is preferred), "
                              f"got {priority!r}")
        limit = spec.get("limit")
        if limit is not None:
            limit = _int_opt(f"{key}.limit", limit, 1)
        entries[name] = {"type": btype, "options": dict(options), "priority": priority,
                         "limit": limit, "spec": spec}
    # whole nodes first, in policy order
    node_cores = dict(zip(alloc.nodes, alloc.cores_per_node, strict=True))
    node_gpus = dict(zip(alloc.nodes, alloc.gpus_per_node, strict=True))
    owner: dict[str, str] = {}
    for name, e in entries.items():
        spec, key = e["spec"], f"backends.{name}.nodes"
        nodes = spec.get("nodes")
        if nodes is None:
            e["nodes"] = ()
            continue
        if isinstance(nodes, list | tuple):
            for i, n in enumerate(nodes):
                if n not in node_cores:
                    raise PolicyError(f"{key}[{i}]", f"{n!r} is not a node of the allocation "
                                      f"({', '.join(alloc.nodes[:8])})")
            chosen = tuple(nodes)
        else:
            count = _amount(key, nodes, alloc.n_nodes, "nodes")
            if count == 0:
                e["nodes"] = ()
                continue
            free = [n for n in alloc.nodes if n not in owner]
            if count > len(free):
                raise PolicyError(key, f"{count} nodes overlap other backends' nodes: "
                                  f"{len(owner)} of the allocation's {alloc.n_nodes} are "
                                  f"taken by {', '.join(sorted(set(owner.values())))}")
            chosen = tuple(free[:count])
        for n in chosen:
            if n in owner:
                raise PolicyError(key, f"node {n!r} overlaps backend '{owner[n]}', which "
                                  "also owns it; give each node to one backend")
            owner[n] = name
        e["nodes"] = chosen
    pool_cores = sum(c for n, c in node_cores.items() if n not in owner)
    pool_gpus = sum(g for n, g in node_gpus.items() if n not in owner)
    # cores and GPUs: within owned nodes, else from the pool of the remaining nodes
    pool_what = "" if not owner else " left beside whole nodes"
    used_cores = used_gpus = 0
    unsized: list[str] = []
    for name, e in entries.items():
        spec, key = e["spec"], f"backends.{name}"
        if e["nodes"]:
            own_c = sum(node_cores[n] for n in e["nodes"])
            own_g = sum(node_gpus[n] for n in e["nodes"])
            e["cores"] = own_c if spec.get("cores") is None else _amount(
                f"{key}.cores", spec["cores"], own_c, "cores of its nodes")
            e["gpus"] = own_g if spec.get("gpus") is None else _amount(
                f"{key}.gpus", spec["gpus"], own_g, "GPUs of its nodes")
            continue
        if spec.get("cores") is None:
            e["cores"] = None
            if e["type"] not in _INFERENCE:
                unsized.append(name)
            else:
                e["cores"] = 0  # an inference server runs elsewhere or on its GPUs
        else:
            c = _amount(f"{key}.cores", spec["cores"], pool_cores, "cores" + pool_what)
            if used_cores + c > pool_cores:
                raise PolicyError(f"{key}.cores", _overlap(c, used_cores, pool_cores,
                                                           "cores", entries, name))
            used_cores += c
            e["cores"] = c
        g = _amount(f"{key}.gpus", spec.get("gpus", 0), pool_gpus, "GPUs" + pool_what)
        if used_gpus + g > pool_gpus:
            raise PolicyError(f"{key}.gpus", _overlap(g, used_gpus, pool_gpus, "GPUs",
                                                      entries, name))
        used_gpus += g
        e["gpus"] = g
    left = pool_cores - used_cores
    for i, name in enumerate(unsized):  # the rest of the pool, split evenly
        share = left // len(unsized) + (1 if i < left % len(unsized) else 0)
        if share < 1:
            raise PolicyError(f"backends.{name}.cores", f"no cores left for it (the other "
                              f"backends take all {pool_cores} of the shared cores); give it "
                              "a cores: share")
        entries[name]["cores"] = share
    return {name: BackendShare(name, e["type"], e["nodes"], e["cores"], e["gpus"],
                               e["options"], e["priority"], e["limit"])
            for name, e in entries.items()}


def _overlap(want: int, used: int, total: int, what: str, entries: dict, name: str) -> str:
    field = "cores" if what == "cores" else "gpus"
    others = [n for n, e in entries.items() if n != name and not e.get("nodes")
              and e.get(field)]
    return (f"{want} {what} overlap the shares of {', '.join(others) or 'other backends'} "
            f"({used} already assigned): together they exceed the {total} {what} "
            f"available to backends without nodes of their own")


# -- routing rules ---------------------------------------------------------------------
def _names(key: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise PolicyError(key, f"must be a string or a list of strings, got {value!r}")
    return frozenset(value)


def _parse_rules(raw: Any, shares: dict[str, BackendShare]) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise PolicyError("routing", f"must be a list of rules like {{kind: executable, "
                          f"backend: sim}}, got {type(raw).__name__}")
    rules = []
    for i, spec in enumerate(raw):
        key = f"routing[{i}]"
        if not isinstance(spec, Mapping):
            raise PolicyError(key, f"a rule is a mapping like {{kind: executable, backend: "
                              f"sim}}, got {spec!r}")
        _known_keys(spec, _RULE_KEYS, key, "a rule")
        if "backend" not in spec:
            raise PolicyError(f"{key}.backend", "missing: name the backend(s) these tasks "
                              "go to")
        targets = spec["backend"]
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list | tuple) or not targets:
            raise PolicyError(f"{key}.backend", f"must be a backend name or a list of names, "
                              f"got {spec['backend']!r}")
        for t in targets:
            if t not in shares:
                raise PolicyError(f"{key}.backend", f"{t!r} is not a backend of this policy "
                                  f"(backends: {', '.join(shares)})")
        kinds = None
        if "kind" in spec:
            kinds = _names(f"{key}.kind", spec["kind"])
            for k in kinds:
                if k not in _KINDS:
                    raise PolicyError(f"{key}.kind", f"unknown task kind {k!r}; one of "
                                      f"{', '.join(_KINDS)}")
            for t in targets:
                if kinds.isdisjoint(shares[t].kinds):
                    raise PolicyError(f"{key}.backend", f"backend {t!r} ({shares[t].type}) "
                                      f"cannot run {'/'.join(sorted(kinds))} tasks")
        tags = _names(f"{key}.tags", spec["tags"]) if "tags" in spec else None
        mins = {m: _int_opt(f"{key}.{m}", spec.get(m, 0), 0)
                for m in ("min_cores", "min_gpus", "min_ranks")}
        if kinds is None and tags is None and not any(mins.values()):
            raise PolicyError(key, "matches every task; give kind, tags or min_cores/"
                              "min_gpus/min_ranks (use 'default' for a catch-all)")
        rules.append(Rule(i, tuple(targets), kinds, tags, **mins))
    return tuple(rules)
