"""A Dask backend whose workers are Slurm jobs, sized by a policy share (``dask-slurm``).

The ``SLURMCluster`` (dask-jobqueue) is created when the backend starts, not when the
policy is read, so a bad policy never submits a job; the backend owns and closes it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ..api.errors import SessionError
from .dask import DaskExecutionBackend

__all__ = ["SlurmDaskBackend"]

#: options consumed here; everything else goes to ``SLURMCluster``
_OWN = ("jobs", "wait_for_workers")


class SlurmDaskBackend(DaskExecutionBackend):
    """``jobs`` Slurm jobs of ``cores // jobs`` cores each, one worker process per job.

    ``options``: ``jobs`` (default: the share's node count), ``wait_for_workers`` (seconds
    to wait at start for every job's worker, default 0: tasks queue until they arrive) and
    any ``SLURMCluster`` keyword (``memory`` default "1GiB", ``walltime`` default
    "00:30:00", ``queue``, ``account``, ``job_extra_directives``, ``log_directory``...).
    """

    def __init__(self, name: str, cores: int, jobs: int, options: dict[str, Any]):
        super().__init__(name=name)
        opts = dict(options)
        self.jobs = opts.pop("jobs", jobs)
        self.wait_for_workers = opts.pop("wait_for_workers", 0)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise SessionError(f"jobs must be an integer >= 1, got {self.jobs!r}")
        per_job = opts.pop("cores", max(1, cores // self.jobs))
        if self.jobs * per_job > max(1, cores):
            raise SessionError(f"{self.jobs} jobs of {per_job} cores exceed the share's "
                               f"{cores} cores")
        self._slurm_kwargs = {"cores": per_job, "processes": 1, "memory": "1GiB",
                              "walltime": "00:30:00", "python": sys.executable,
                              "scheduler_options": {"dashboard_address": ":0"}, **opts}

    def capacity(self) -> int:
        return self._nthreads or self.jobs * self._slurm_kwargs["cores"]

    async def _start(self) -> None:
        def make() -> Any:
            from dask_jobqueue import SLURMCluster
            cluster = SLURMCluster(**self._slurm_kwargs)
            cluster.scale(jobs=self.jobs)
            return cluster

        self.cluster = await asyncio.to_thread(make)
        self._owns_cluster = True  # closed by the Dask backend's shutdown
        await super()._start()
        if self.wait_for_workers:
            await asyncio.to_thread(self.client.wait_for_workers, self.jobs,
                                    self.wait_for_workers)
            await asyncio.to_thread(self._refresh_workers)
