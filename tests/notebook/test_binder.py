"""binder/: the files Binder (repo2docker) runs install this package with its extras."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINDER = os.path.join(ROOT, "binder")


def test_post_build_is_valid_bash_and_installs_known_extras():
    post = os.path.join(BINDER, "postBuild")
    assert os.access(post, os.X_OK)
    subprocess.run(["bash", "-n", post], check=True)
    with open(post) as f:
        text = f.read()
    extras = re.search(r'pip install [^\n]*-e "\.\[([a-z,]+)\]"', text).group(1).split(",")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["optional-dependencies"]
    assert "notebook" in extras and set(extras) <= set(declared)


def test_requirements_name_jupyterlab_and_widgets():
    with open(os.path.join(BINDER, "requirements.txt")) as f:
        reqs = [r.split(">")[0].split("=")[0].strip() for r in f
                if r.strip() and not r.startswith("#")]
    assert {"jupyterlab", "ipywidgets"} <= set(reqs)
