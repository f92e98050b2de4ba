"""``columns(items)`` lays stream items out as the columns of their expanded events."""

from __future__ import annotations

import random

import pytest

from rhapsody_lab.api.events import RUN, expand
from rhapsody_lab.observe.columns import columns


@pytest.mark.parametrize("seed", range(25))
def test_columns_equal_the_expanded_events_transposed(seed):
    rnd = random.Random(seed)
    items: list[tuple] = []
    for i in range(rnd.randint(0, 30)):
        if rnd.random() < 0.5:
            items.append((float(i), f"t{i}", rnd.choice(["QUEUED", "DONE"]), "b", rnd.choice(
                [None, 3, "w-1"])))
        else:
            n = rnd.randint(1, 6)
            uids = [f"r{i}.{k}" for k in range(n)]
            times = [i + k / 10 for k in range(n)] if rnd.random() < 0.5 else float(i)
            slots = [k for k in range(n)] if rnd.random() < 0.5 else rnd.choice([None, 7])
            items.append((RUN, times, uids, "RUNNING", "b2", slots))
    events = expand(items)
    cols = columns(items)
    assert list(zip(*cols, strict=True)) == [tuple(e) for e in events]
    assert len(cols) == len(events)
