"""Building a policy's backends inside their shares, and the parts of a policy session."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..api.errors import SessionError
from ..api.routing import PolicyRouter
from ..resources import Allocation
from .load import load_policy
from .model import BackendShare, Policy, PolicyError

if TYPE_CHECKING:
    from ..backends.dask_nodes import WorkerSpec

__all__ = ["build_backends", "node_workers", "session_parts"]


def _spread(total: int, caps: list[int]) -> list[int]:
    """``total`` split as evenly as ``caps`` (each node's own amount) allow."""
    out = [0] * len(caps)
    left = total
    while left > 0:
        open_ = [i for i, c in enumerate(caps) if out[i] < c]
        if not open_:
            break
        each = max(1, left // len(open_))
        for i in open_:
            add = min(each, caps[i] - out[i], left)
            out[i] += add
            left -= add
    return out


def node_workers(share: BackendShare, allocation: Allocation) -> list[WorkerSpec]:
    """One Dask worker per node of ``share``: its cores (threads) and GPUs spread over them."""
    from ..backends.dask_nodes import WorkerSpec

    index = {n: i for i, n in enumerate(allocation.nodes)}
    cores = _spread(share.cores, [allocation.cores_per_node[index[n]] for n in share.nodes])
    gpus = _spread(share.gpus, [allocation.gpus_per_node[index[n]] for n in share.nodes])
    return [WorkerSpec(n, c, {"GPU": g} if g else {})
            for n, c, g in zip(share.nodes, cores, gpus, strict=True) if c > 0]


def build_backends(policy: Policy) -> list:
    """Construct (not start) one backend per share, sized to it; runtimes load lazily."""
    from ..backends.registry import backend_class

    out = []
    for b in policy.backends.values():
        opts = dict(b.options)
        key = f"backends.{b.name}.options"
        try:
            if b.type == "concurrent":
                cls = backend_class("concurrent")
                opts.setdefault("max_workers", max(1, b.cores))
                backend = cls(name=b.name, **opts)
            elif b.type == "processes":
                from concurrent.futures import ProcessPoolExecutor
                cls = backend_class("concurrent")
                n = opts.pop("max_workers", max(1, b.cores))
                backend = cls(ProcessPoolExecutor(n), name=b.name, **opts)
            elif b.type == "dask" and b.nodes and (
                    policy.allocation.source != "local" or "launcher" in opts):
                from ..backends.dask_nodes import DaskNodesBackend
                backend = DaskNodesBackend(node_workers(b, policy.allocation), name=b.name,
                                           **opts)
            elif b.type == "dask":
                cls = backend_class("dask")
                res = {"n_workers": max(1, b.cores), "threads_per_worker": 1,
                       "silence_logs": 40, **opts.pop("resources", {})}
                if b.gpus and "resources" not in res:
                    res["resources"] = {"GPU": b.gpus}
                backend = cls(resources=res, name=b.name, **opts)
            elif b.type == "dask-slurm":
                import importlib.util
                if importlib.util.find_spec("dask_jobqueue") is None:
                    raise ImportError("dask-jobqueue is missing (pip install dask-jobqueue)")
                from ..backends.dask_slurm import SlurmDaskBackend
                backend = SlurmDaskBackend(b.name, b.cores, max(1, len(b.nodes)), opts)
            elif b.type == "dragon":
                cls = backend_class("dragon")
                opts.setdefault("num_workers", max(1, b.cores))
                backend = cls(name=b.name, **opts)
            elif b.type == "flux":  # its own instance or $FLUX_URI's; Flux places the jobs
                backend = backend_class("flux")(name=b.name, **opts)
            elif b.type == "radical":  # one RP pilot of the share's cores (+ raptor)
                from ..backends.radical_pilot import DEFAULT_RAPTOR
                res = {"resource": "local.localhost", "cores": max(1, b.cores),
                       **opts.pop("resources", {})}
                if b.gpus:
                    res.setdefault("gpus", b.gpus)
                raptor = opts.pop("raptor_config", DEFAULT_RAPTOR)
                backend = backend_class("radical_pilot")(res, raptor, name=b.name, **opts)
            else:  # vllm, dragon-vllm
                cls = backend_class("vllm" if b.type == "vllm" else "dragon_vllm")
                if "base_url" in opts:
                    opts["endpoint"] = opts.pop("base_url")
                if "endpoint" not in opts:
                    opts.setdefault("num_gpus", b.gpus)
                backend = cls(name=b.name, **opts)
        except PolicyError:
            raise
        except ImportError as exc:
            raise PolicyError(f"backends.{b.name}.type", f"{b.type} is not installed here: "
                              f"{exc}") from exc
        except (SessionError, TypeError, ValueError) as exc:
            raise PolicyError(key, f"{b.type} backend refused these options: {exc}") from exc
        out.append(backend)
    return out


def session_parts(source: str | os.PathLike | Mapping, allocation: Allocation | None = None
                  ) -> tuple[list, PolicyRouter]:
    """What ``Session.from_policy`` needs: the backends (not started, those with a
    ``limit`` behind their gate) and the router, after validating the whole policy."""
    policy = load_policy(source, allocation)
    router = PolicyRouter(policy)
    return router.wrap(build_backends(policy)), router
