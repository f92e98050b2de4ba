"""Building a policy's backends inside their shares, and the parts of a policy session."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..api.errors import SessionError
from ..api.routing import PolicyRouter
from ..resources import Allocation
from .load import load_policy
from .model import Policy, PolicyError

__all__ = ["build_backends", "session_parts"]


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
