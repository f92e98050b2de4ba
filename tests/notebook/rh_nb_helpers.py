"""Helpers shared by the notebook tests."""

from __future__ import annotations

import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def run(shell, code: str):
    """Run a cell; fail the test if it raised (magics must not raise on bad input)."""
    result = shell.run_cell(code)
    assert result.error_before_exec is None and result.error_in_exec is None, \
        f"cell raised: {result.error_before_exec or result.error_in_exec!r}"
    return result.result


def timed(shell, code: str) -> float:
    t0 = time.perf_counter()
    run(shell, code)
    return time.perf_counter() - t0
