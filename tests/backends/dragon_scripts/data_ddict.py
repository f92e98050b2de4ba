"""Under `dragon -s data_ddict.py`: DragonDataBackend on a real DDict, a JSON line a check."""

import asyncio
import json
import time

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.backends import DragonExecutionBackendV3
from rhapsody_lab.backends.data import DataBackendState, DragonDataBackend

MEM = 64 * 1024 * 1024


def report(check, **fields):
    print(json.dumps({"check": check, **fields}, default=repr), flush=True)


def read_key(descriptor, key):
    """Runs in a Dragon worker process: attach to the DDict by its descriptor."""
    from dragon.data.ddict import DDict
    d = DDict.attach(descriptor)
    try:
        return d[key]
    finally:
        d.detach()


async def main():
    refused = []
    for kwargs in ({"_wait_for_keys": False}, {"wait_for_keys": False},
                   {"working_set_size": 1}, {"n_nodes": 0}):
        try:
            DragonDataBackend(**kwargs)
            refused.append(None)
        except SessionError as exc:
            refused.append(str(exc))
    report("refused", messages=refused)

    t0 = time.time()
    backend = await DragonDataBackend(name="dd", managers_per_node=1, n_nodes=1,
                                      total_mem=MEM)
    started = time.time() - t0
    ep = backend.endpoints[0]
    backend.ddict["answer"] = 42
    from dragon.data.ddict import DDict
    other = await asyncio.to_thread(DDict.attach, ep.serialize())
    seen = other["answer"]
    other.detach()
    report("started", seconds=round(started, 2), state=backend.state.name,
           ready=await backend.ready(), descriptor_len=len(ep.serialize()), seen=seen)
    await backend.shutdown()
    report("shutdown", state=backend.state.name, ready=await backend.ready(),
           ddict=backend.ddict is None)

    data = DragonDataBackend(name="store", total_mem=MEM)
    exec_backend = DragonExecutionBackendV3(num_workers=1)
    async with Session([exec_backend, data]) as session:
        in_session = data.state.name
        data.ddict["k"] = "from the driver"
        task = ComputeTask(function=read_key, args=(data.endpoints[0].serialize(), "k"))
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=120)
        report("session", state=in_session, names=sorted(session.data_backends),
               exec_names=sorted(session.backends), task_state=task.state,
               task_value=task.return_value, task_error=repr(task.exception))
    report("closed", state=data.state.name, is_shutdown=data.state is DataBackendState.SHUTDOWN)
    report("done")


if __name__ == "__main__":
    asyncio.run(main())
