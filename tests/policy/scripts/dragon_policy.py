"""Run under ``dragon -s dragon_policy.py``: a policy session with Dragon beside a thread pool.

Prints one JSON line per check (the test asserts on them).
"""

import asyncio
import json
import os

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import ResourceError
from rhapsody_lab.resources import Allocation

POLICY = {
    "backends": {"dragon": {"type": "dragon", "cores": 1},
                 "exe": {"type": "concurrent", "cores": 1}},
    "routing": [{"kind": "executable", "backend": "exe"},
                {"kind": "function", "backend": "dragon"}],
}


def report(check, **fields):
    print(json.dumps({"check": check, **fields}, default=repr), flush=True)


def square(x):
    return x * x


def where():
    return os.getpid()


async def main():
    alloc = Allocation(("n0",), (2,), (0,), "local")
    async with Session.from_policy(POLICY, alloc) as s:
        report("started", capacity={n: b.capacity() for n, b in s.backends.items()})
        fns = [ComputeTask(function=square, args=(i,)) for i in range(50)]
        exes = [ComputeTask(executable="/bin/echo", arguments=[str(i)]) for i in range(10)]
        await s.submit_tasks(fns + exes)
        await s.wait_tasks(fns + exes, timeout=120)
        report("mixed", fn_states=sorted({t.state for t in fns}),
               exe_states=sorted({t.state for t in exes}),
               fn_backends=sorted({t.backend for t in fns}),
               exe_backends=sorted({t.backend for t in exes}),
               values=[t.return_value for t in fns], outs=[t.stdout for t in exes])
        mpi = ComputeTask(executable="/bin/true",
                          task_backend_specific_kwargs={"type": "mpi", "ranks": 2},
                          backend="dragon")
        try:
            await asyncio.wait_for(s.submit_tasks([mpi]), timeout=30)
            report("oversized", raised=None)
        except ResourceError as exc:
            report("oversized", raised=type(exc).__name__, message=str(exc),
                   state=mpi.state)
    report("closed", ok=True)


if __name__ == "__main__":
    asyncio.run(main())
