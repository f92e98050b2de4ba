"""Lab RadicalExecutionBackend vs raw RP TaskManager on the same pilot: 500 /bin/true.

Prints the pilot start-up time, each side's wall time for N tasks (best of ``--repeat``)
and the ratio lab/raw throughput (goal >= 0.9). Needs ``rhapsody_lab[radical]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time


async def main(n: int, repeat: int) -> None:
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends.radical_pilot import RadicalExecutionBackend

    work = tempfile.mkdtemp(prefix="bench-radical-")
    backend = RadicalExecutionBackend({"resource": "local.localhost", "cores": 2,
                                       "runtime": 20})
    session = Session(backends=[backend], work_dir=work)
    t0 = time.perf_counter()
    await backend
    startup = time.perf_counter() - t0
    rp = backend._rp
    tmgr = backend.task_manager
    lab_times, raw_times = [], []
    try:
        for _ in range(repeat):
            tasks = [ComputeTask(executable="/bin/true") for _ in range(n)]
            t = time.perf_counter()
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=600)
            lab_times.append(time.perf_counter() - t)
            states = collections.Counter(task.state for task in tasks)
            bad = [task for task in tasks if task.state != "DONE"][:3]
            assert states == {"DONE": n}, (states, [(t.uid, t.stderr, t.exit_code,
                                                      t.exception) for t in bad])

            def raw() -> float:
                t = time.perf_counter()  # building the descriptions counts, as for lab
                tds = [rp.TaskDescription({"executable": "/bin/true"}) for _ in range(n)]
                rts = tmgr.submit_tasks(tds)
                tmgr.wait_tasks([x.uid for x in rts], timeout=600)
                assert all(x.state == rp.DONE for x in rts)
                return time.perf_counter() - t
            raw_times.append(await asyncio.to_thread(raw))
    finally:
        await session.close()
    lab, raw_best = min(lab_times), min(raw_times)
    print(f"pilot start-up (session + pilot active): {startup:.1f} s")
    print(f"{n} /bin/true  lab {lab:.2f} s ({n / lab:.0f}/s)  raw RP {raw_best:.2f} s "
          f"({n / raw_best:.0f}/s)")
    print(f"ratio lab/raw throughput: {raw_best / lab:.2f}x (goal >= 0.9x)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    asyncio.run(main(a.n, a.repeat))
