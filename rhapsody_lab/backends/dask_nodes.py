"""A Dask backend whose workers run on given nodes of the allocation (a policy's node share).

The scheduler runs in this process (a ``LocalCluster`` with no workers of its own); one
``dask worker`` process per node is started through a *launcher*: ``srun`` inside a Slurm
job (a job step pinned to the node), ``ssh``, or a template with ``{host}`` and ``{cores}``
(e.g. ``"ip netns exec {host}"``). Nothing starts before the backend does; the workers are
the node list a policy share owns, so tasks run only there. The backend owns and stops
the scheduler and every worker it launched.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .._procgroup import signal_group
from ..api.errors import BackendError, SessionError
from .dask import DaskExecutionBackend

__all__ = ["DaskNodesBackend", "WorkerSpec"]

LAUNCHERS = ("auto", "srun", "ssh")


@dataclass(frozen=True)
class WorkerSpec:
    """One Dask worker process on ``host`` with ``nthreads`` threads and its ``resources``."""

    host: str
    nthreads: int
    resources: dict[str, float] = field(default_factory=dict)


def _spec(i: int, w: WorkerSpec | Mapping) -> WorkerSpec:
    if isinstance(w, Mapping):
        try:
            w = WorkerSpec(**w)
        except TypeError as exc:
            raise SessionError(f"workers[{i}] must have host, nthreads and optionally "
                               f"resources: {exc}") from exc
    if not isinstance(w, WorkerSpec) or not isinstance(w.host, str) or not w.host:
        raise SessionError(f"workers[{i}] must be a WorkerSpec or a mapping with a host name, "
                           f"got {w!r}")
    if isinstance(w.nthreads, bool) or not isinstance(w.nthreads, int) or w.nthreads < 1:
        raise SessionError(f"workers[{i}].nthreads must be an integer >= 1, got "
                           f"{w.nthreads!r}")
    return w


class DaskNodesBackend(DaskExecutionBackend):
    """Dask with one worker per node of ``workers`` (host, threads, resources such as GPU).

    ``launcher``: ``"srun"``, ``"ssh"``, ``"auto"`` (srun inside a Slurm job, else ssh) or a
    template such as ``"ssh -p 2222 {host}"``. ``scheduler_host``: the address workers reach
    the scheduler at (default: this host's name). ``wait_for_workers``: seconds to wait at
    start for every worker (0: tasks queue until workers arrive).
    """

    def __init__(self, workers: Sequence[WorkerSpec | Mapping], launcher: str = "auto",
                 scheduler_host: str | None = None, python: str | None = None,
                 wait_for_workers: float = 60, name: str = "dask"):
        super().__init__(name=name)
        if isinstance(workers, str | bytes) or not isinstance(workers, Sequence) or not workers:
            raise SessionError(f"workers must be a non-empty list of WorkerSpec(host, "
                               f"nthreads), got {workers!r}")
        self.workers = tuple(_spec(i, w) for i, w in enumerate(workers))
        if not isinstance(launcher, str) or not (launcher in LAUNCHERS or "{host}" in launcher):
            raise SessionError(f"launcher must be one of {', '.join(LAUNCHERS)} or a command "
                               f"template with {{host}}, got {launcher!r}")
        if isinstance(wait_for_workers, bool) or not isinstance(wait_for_workers, int | float) \
                or wait_for_workers < 0:
            raise SessionError(f"wait_for_workers must be seconds >= 0, got "
                               f"{wait_for_workers!r}")
        self.launcher = launcher
        self.scheduler_host = scheduler_host or socket.gethostname()
        self.python = python or sys.executable
        self.wait_for_workers = wait_for_workers
        self._procs: list[tuple[WorkerSpec, subprocess.Popen, object]] = []

    def capacity(self) -> int:
        return self._nthreads or sum(w.nthreads for w in self.workers)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The nodes this backend's workers run on."""
        return tuple(w.host for w in self.workers)

    def resolved_launcher(self) -> str:
        """``srun`` inside a Slurm job with ``srun`` on the PATH, else ``ssh``, if ``auto``."""
        if self.launcher != "auto":
            return self.launcher
        return "srun" if os.environ.get("SLURM_JOB_ID") and shutil.which("srun") else "ssh"

    def worker_command(self, w: WorkerSpec, address: str) -> list[str]:
        """The command that starts ``w``'s worker on its node, joining ``address``."""
        cmd = [self.python, "-m", "distributed.cli.dask_worker", address, "--name", w.host,
               "--nthreads", str(w.nthreads), "--nworkers", "1", "--no-dashboard",
               "--death-timeout", "60"]
        if w.resources:
            cmd += ["--resources", " ".join(f"{k}={v}" for k, v in w.resources.items())]
        launcher = self.resolved_launcher()
        if launcher == "srun":
            return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={w.host}",
                    f"--cpus-per-task={w.nthreads}", "--overlap", *cmd]
        if launcher == "ssh":
            return ["ssh", "-o", "BatchMode=yes", w.host, shlex.join(cmd)]
        return [*shlex.split(launcher.format(host=shlex.quote(w.host), cores=w.nthreads)),
                *cmd]

    async def _start(self) -> None:
        try:
            from distributed import LocalCluster
        except ImportError as exc:
            raise BackendError(self.name, "the dask backend needs `distributed`; install "
                               "it with pip install 'rhapsody-lab[dask]'") from exc

        def scheduler():
            try:
                return LocalCluster(n_workers=0, host=self.scheduler_host, scheduler_port=0,
                                    dashboard_address=":0", protocol="tcp", silence_logs=40)
            except OSError as exc:
                raise BackendError(self.name, f"cannot start the scheduler on "
                                   f"{self.scheduler_host!r}: {exc}; give scheduler_host= an "
                                   "address of this host that the nodes reach") from exc

        self.cluster = await asyncio.to_thread(scheduler)
        self._owns_cluster = True  # closed by the Dask backend's shutdown
        await super()._start()
        try:
            self._launch(self.cluster.scheduler_address)
            if self.wait_for_workers:
                await self._wait_for_workers()
        except BaseException:
            await self._stop()  # the scheduler and every worker launched so far
            raise

    def _launch(self, address: str) -> None:
        for w in self.workers:
            cmd = self.worker_command(w, address)
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _reap)
            try:
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                log.close()
                raise BackendError(self.name, f"cannot launch the worker of {w.host} with "
                                   f"{cmd[0]!r} (launcher {self.resolved_launcher()!r}): "
                                   f"{exc}") from exc
            self._procs.append((w, p, log))

    async def _wait_for_workers(self) -> None:
        try:
            await asyncio.to_thread(self.client.wait_for_workers, len(self.workers),
                                    self.wait_for_workers)
        except TimeoutError as exc:
            raise BackendError(self.name, f"{len(self.workers)} workers did not all join "
                               f"within {self.wait_for_workers} s; not joined: "
                               f"{self._missing()}") from exc
        await asyncio.to_thread(self._refresh_workers)

    def _missing(self) -> str:
        names = {w.get("name") for w in self.client.scheduler_info(n_workers=-1)
                 .get("workers", {}).values()}
        out = []
        for w, p, log in self._procs:
            if w.host in names:
                continue
            log.seek(0)
            tail = log.read()[-300:].decode(errors="replace").strip()
            rc = p.poll()
            out.append(f"{w.host} ({'running' if rc is None else f'exit {rc}'}) {tail}")
        return "; ".join(out)

    async def _stop(self) -> None:
        await super()._stop()  # the scheduler closes: its workers exit
        await asyncio.to_thread(self._reap)

    def _reap(self) -> None:
        for _w, p, log in self._procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                signal_group(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    signal_group(p.pid, signal.SIGKILL)
                    p.wait()
            log.close()
        self._procs = []
