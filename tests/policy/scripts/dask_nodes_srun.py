"""Run under ``salloc``: a policy's Dask share on the job's node, workers started by srun.

Prints one JSON line: the allocation read from Slurm, the launch command, and each task's
Slurm job and step as its worker saw them.
"""

from __future__ import annotations

import asyncio
import json

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.resources import Allocation


async def main() -> dict:
    alloc = Allocation.detect()
    policy = {"backends": {"nodes": {"type": "dask", "nodes": 1}}, "default": "nodes"}
    async with Session.from_policy(policy, alloc) as s:
        backend = s.backends["nodes"]
        out = {"source": alloc.source, "job": alloc.job_id, "nodes": list(alloc.nodes),
               "cores": alloc.cores, "backend": type(backend).__name__,
               "launcher": backend.resolved_launcher(),
               "command": backend.worker_command(backend.workers[0], "tcp://x:1"),
               "capacity": backend.capacity()}
        tasks = [ComputeTask(executable="sh", arguments=["-c", "echo $SLURM_JOB_ID "
                                                         "$SLURM_STEP_ID $SLURMD_NODENAME"])
                 for _ in range(6)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks, timeout=60)
        out["states"] = [t.state for t in tasks]
        out["seen"] = sorted({t.stdout.strip() for t in tasks})
    out["left"] = len(backend._procs)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
