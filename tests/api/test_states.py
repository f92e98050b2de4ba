"""One list of task states: ``api/states.py`` defines it, every other module imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rhapsody_lab.api.states import (
    CANCELED,
    DONE,
    FAILED,
    NEW,
    QUEUED,
    RUNNING,
    SHOWN_STATES,
    STATES,
    SUBMITTED,
    TERMINAL_STATES,
    state_rank,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rhapsody_lab"


def test_the_list_is_the_documented_life_cycle():
    assert STATES == (NEW, SUBMITTED, QUEUED, RUNNING, DONE, FAILED, CANCELED)
    assert {DONE, FAILED, CANCELED} == TERMINAL_STATES
    assert STATES[1:] == SHOWN_STATES
    ranks = [state_rank(s) for s in STATES]
    assert ranks == sorted(ranks) and len({state_rank(s) for s in TERMINAL_STATES}) == 1


def _state_literals(node: ast.AST) -> int:
    """How many state names a tuple/list/set literal spells out."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return sum(isinstance(e, ast.Constant) and e.value in STATES for e in node.elts)
    return 0


def test_no_module_spells_out_a_state_list_of_its_own():
    copies = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "states.py" and path.parent.name == "api":
            continue
        tree = ast.parse(path.read_text(), str(path))
        exported = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", "") == "__all__" for t in n.targets)}
        for node in ast.walk(tree):
            if id(node) not in exported and _state_literals(node) >= 3:
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert copies == [], f"state lists outside api/states.py: {copies}"


def test_the_lab_panel_takes_the_order_from_the_server():
    source = (ROOT / "labextension" / "src" / "panel.ts").read_text()
    quoted = re.findall(r"'(NEW|SUBMITTED|QUEUED|RUNNING|DONE|FAILED|CANCELED)'", source)
    assert quoted == [], f"panel.ts spells out states: {quoted}"
    assert "reply.states" in source
