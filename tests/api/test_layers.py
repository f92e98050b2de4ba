"""Dependencies point down only: the engine imports the standard library (+ cloudpickle)
and itself, never a backend, the policy, observe, the dashboard or the notebook layer."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "rhapsody_lab"
#: the engine layer (README of the spec): modules allowed to import each other
ENGINE = ("rhapsody_lab.api", "rhapsody_lab.resources", "rhapsody_lab._net",
          "rhapsody_lab._procgroup")
ENGINE_FILES = [*sorted((PACKAGE / "api").rglob("*.py")), PACKAGE / "resources.py",
                PACKAGE / "_net.py", PACKAGE / "_procgroup.py"]
THIRD_PARTY_OK = {"cloudpickle"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``source``: top-level, in functions, under
    ``TYPE_CHECKING``, and ``import_module("...")``/``__import__("...")`` of a literal."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base == "rhapsody_lab":  # from .. import policy: the names are modules
                found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Call) and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def allowed(name: str) -> bool:
    top = name.partition(".")[0]
    if top == "rhapsody_lab":
        return any(name == e or name.startswith(e + ".") for e in ENGINE)
    return top in sys.stdlib_module_names or top in THIRD_PARTY_OK


def test_the_checker_sees_imports_anywhere():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bokeh\n"
              "def f():\n    from ..policy import load_policy\n    from .. import dashboard\n"
              "    importlib.import_module('rhapsody_lab.notebook')\n"
              "from .errors import SessionError\nfrom ..resources import Allocation\n")
    bad = [n for _, n in imports(source, "rhapsody_lab.api.session") if not allowed(n)]
    assert bad == ["bokeh", "rhapsody_lab.policy", "rhapsody_lab.dashboard",
                   "rhapsody_lab.notebook"]


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_engine_module_imports_nothing_above_it(path):
    found = imports(path.read_text(), _module_name(path), path.name == "__init__.py")
    bad = [f"{path.relative_to(REPO)}:{line} imports {name}" for line, name in found
           if not allowed(name)]
    assert not bad, ("the engine imports only the standard library, cloudpickle and "
                     "itself; reach upper layers through rhapsody_lab.api.extensions:\n"
                     + "\n".join(bad))


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def test_session_reaches_policy_services_and_dashboard_through_registration(tmp_path):
    """In a fresh interpreter whose engine modules cannot import an upper layer or a
    runtime library, from_policy, start_service (local and Dragon-placed through an
    injected launcher) and dashboard() work; the top package's loaders did the imports."""
    pytest.importorskip("bokeh", reason="the dashboard extra is not installed")
    pytest.importorskip("jupyter_bokeh", reason="the dashboard extra is not installed")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("layers_probe.py")),
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict[0] == "OK", verdict
    result = verdict[1]
    assert result["limited"] == "LimitedBackend" and result["states"] == ["DONE"]
    assert result["local"] == "local" and result["placed"] == "dragon on fake-node"
    assert result["dragon_launcher"] == "rhapsody_lab.backends._dragon_launch"
    assert result["launcher_calls"] == ["start", "stop", "kill_tagged fake-node"]
    assert result["dashboard"] == "DashboardWidget"
    assert result.get("telemetry_completed", 3) == 3
    assert result["after_close"] == ["STOPPED", "STOPPED", False, False]
    assert set(result["importers"].values()) == {"rhapsody_lab"}, result["importers"]


def test_import_rhapsody_lab_is_fast_and_loads_no_upper_layer():
    code = ("import sys, rhapsody_lab; print([m for m in sys.modules if m.startswith(("
            "'IPython', 'rhapsody_lab.notebook', 'rhapsody_lab.backends', "
            "'rhapsody_lab.policy', 'rhapsody_lab.dashboard', 'rhapsody_lab.observe'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), check=True).stdout
    assert out.strip() == "[]", out
    best = None
    for _ in range(3):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rhapsody_lab"],
                             capture_output=True, text=True, env=_env(), check=True).stderr
        us = int(re.search(r"\|\s*(\d+) \| rhapsody_lab$", err, re.M).group(1))
        best = us if best is None else min(best, us)
    assert best < 300_000, f"import rhapsody_lab took {best / 1e6:.3f} s"
