"""The notebooks, executed headless in a real kernel (nbclient): no errors, real results.

The magics demo also measures, from the kernel's own execute_input/execute_reply times, that
cells using the magics return within 100 ms while tasks run on the kernel's loop.
"""

from __future__ import annotations

import os
import re
from datetime import datetime

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from rh_nb_helpers import NOTEBOOKS  # noqa: E402

pytestmark = pytest.mark.slow

WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(nb, timeout: int = 180):
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     record_timing=True,
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    return nb


def read(name: str):
    return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(str(out.data.get("text/plain", "")))
    return "".join(parts)


def assert_no_errors(nb) -> None:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"cell {i} failed: {out.ename}: {out.evalue}"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Traceback" not in out.text, f"cell {i}: {out.text}"


def cell_seconds(cell) -> float:
    t = cell.metadata["execution"]
    start = datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def find(nb, source_start: str):
    return next(c for c in nb.cells if c.cell_type == "code"
                and c.source.startswith(source_start))


def test_magics_demo_runs_and_cells_return_fast():
    nb = execute(read("magics-demo.ipynb"))
    assert_no_errors(nb)
    start = find(nb, "%rhapsody start")
    assert any(WIDGET in o.get("data", {}) and "text/html" in o.data
               for o in start.outputs), "the session panel (with its HTML fallback)"
    measured = find(nb, "t0 = time.perf_counter()")
    ms = float(re.search(r"after ([0-9.]+) ms", outputs_text(measured)).group(1))
    assert ms < 100
    # kernel-side time of every magic cell that only schedules work, while tasks run
    quick = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(
        ("%rhapsody map", "%%rhapsody task", "%rhapsody status", "t0 = time"))]
    durations = {c.source.splitlines()[0]: cell_seconds(c) for c in quick}
    assert len(durations) >= 6
    print("kernel-side cell durations (s):", durations)
    assert max(durations.values()) < 0.1, durations
    wait = next(c for c in nb.cells if c.source.strip() == "%rhapsody wait")
    assert any(WIDGET in o.get("data", {}) for o in wait.outputs), "a progress widget"
    assert "42" in outputs_text(find(nb, "(await answer)"))
    assert "['CANCELED', 'DONE']" in outputs_text(find(nb, "%rhapsody wait sleepers"))
    assert "no inference backend" in outputs_text(find(nb, "%rhapsody ai"))
    assert "stopped" in outputs_text(find(nb, "%rhapsody stop"))
    listing = find(nb, "squares")
    assert "12 tasks" in listing.outputs[0].data["text/html"]


def _dask_available() -> bool:
    try:
        import distributed  # noqa: F401

        from rhapsody_lab.backends import DaskExecutionBackend  # noqa: F401
    except ImportError:
        return False
    return True


def _flux_available() -> bool:
    from rhapsody_lab.backends._flux_env import find_install, import_flux
    install = find_install()
    if install is None:
        return False
    try:
        import_flux(install)
    except ImportError:
        return False
    return True


def test_tutorial_all_parts_with_an_inference_server(fake_endpoint, monkeypatch):
    monkeypatch.setenv("RHAPSODY_INFERENCE_ENDPOINT", fake_endpoint)
    nb = execute(read("rhapsody-tutorial.ipynb"))
    assert_no_errors(nb)
    text = "".join(outputs_text(c) for c in nb.cells)
    assert "Return    : Hello from" in text
    assert "Submitted 16 tasks. All completed." in text
    assert "FAILED ValueError: this task fails on purpose" in text
    assert "Training results: {'model': 'NearestCentroid'" in text
    assert "Task 3 [Compute]" in text
    if _dask_available():
        assert "--- dask ---" in text and "on dask" in text
    if _flux_available():  # CI builds flux-core (.ci/setup.d/45-flux.sh)
        assert "DONE on flux: hello from a Flux job" in text
        assert re.search(r"DONE on flux: 3\.1\d*", text)  # estimate_pi, run as a Flux job
        assert re.search(r"DONE on flux: rank [01], rank [01]", text)
    else:
        assert "Flux skipped: Backend 'flux' failed: no flux-core install found" in text
    assert "Telemetry tasks : {'submitted': 32" in text and "'completed': 32" in text
    assert re.search(r"Node \S+: CPU \d+ %, memory \d+ %", text)
    plot = find(nb, "from IPython.display import display")
    shown = [o for o in plot.outputs if "data" in o and WIDGET in o.data]
    assert shown  # the Bokeh widget of the resources plot
    stats = find(nb, "%load_ext rhapsody_lab.notebook")
    assert "latency (s)" in stats.outputs[0].data["text/html"]


def test_tutorial_part3_skips_cleanly_without_an_inference_server(monkeypatch):
    monkeypatch.delenv("RHAPSODY_INFERENCE_ENDPOINT", raising=False)
    nb = read("rhapsody-tutorial.ipynb")
    first = next(i for i, c in enumerate(nb.cells) if c.source.startswith("import asyncio"))
    part3 = next(i for i, c in enumerate(nb.cells) if c.source.startswith("# Part 3") or
                 "# Part 3" in c.source)
    nb.cells = [nb.cells[first], *nb.cells[part3:]]
    nb = execute(nb)
    assert_no_errors(nb)
    text = "".join(outputs_text(c) for c in nb.cells)
    assert "No inference server configured" in text
    assert text.count("skipped: no inference server configured") == 2


def test_extension_loaded_at_kernel_start_uses_the_kernel_loop():
    """Loaded by the kernel's config (before its loop runs), the session still lives on
    the kernel's loop, and `%rhapsody wait` blocks only its cell."""
    cells = ["%rhapsody start --workers 2",
             "%rhapsody map abs range(-4, 0)",
             "%rhapsody wait",
             "import asyncio, threading\n"
             "print(session.backends['concurrent']._loop is asyncio.get_running_loop(),"
             " threading.current_thread().name, [t.return_value for t in tasks])"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=60, kernel_name="python3",
        extra_arguments=["--IPKernelApp.extensions=['rhapsody_lab.notebook']"])
    client.execute()
    assert_no_errors(nb)
    assert outputs_text(nb.cells[-1]).strip() == "True MainThread [4, 3, 2, 1]"
