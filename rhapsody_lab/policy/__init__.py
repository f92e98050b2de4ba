"""Resource policies: which backend gets which share of the ``Allocation``, and which tasks.

A policy is a mapping (a dict, a JSON file, or a YAML file when PyYAML is installed)::

    backends:
      sim:   {type: concurrent, cores: 1, limit: 64}      # executables
      fn:    {type: dask, cores: 0.5, priority: 1}         # functions (a fraction of the cores)
      llm:   {type: vllm, options: {endpoint: "http://127.0.0.1:8001/v1"}}
    routing:
      - {kind: executable, backend: sim}
      - {tags: [ml], backend: fn}
      - {min_cores: 2, backend: [fn, sim]}
    default: fn

``load_policy`` checks everything against the allocation before any backend exists and
raises ``PolicyError`` naming the offending key (``backends.sim.cores: 12 exceeds the
allocation's 2 cores``). ``Session.from_policy`` builds the backends (``build_backends``)
and routes with ``rhapsody_lab.api.routing.PolicyRouter``: importing this module registers
``session_parts`` as the engine's ``"policy"`` provider (``rhapsody_lab.api.extensions``).
Standard library only: PyYAML is imported only to read a ``.yaml``/``.yml`` file.
"""

from __future__ import annotations

from ..api import extensions
from .build import build_backends, node_workers, session_parts
from .load import load_policy
from .model import BACKEND_TYPES, BackendShare, Policy, PolicyError, Rule

__all__ = ["BACKEND_TYPES", "BackendShare", "Policy", "PolicyError", "Rule",
           "build_backends", "load_policy", "node_workers", "session_parts"]

extensions.register_provider("policy", session_parts)
