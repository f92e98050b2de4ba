"""RADICAL-Pilot's environment (``backends/_rp_env.py``): ``prepare`` sets what RP needs,
the last ``release`` puts back only what it set and the user has not changed since."""

from __future__ import annotations

import os
import sys

import pytest

from rhapsody_lab.backends import _rp_env

KEYS = ("RADICAL_DEFAULT_IFACE", "RADICAL_UTILS_NTPHOST", "RADICAL_PROFILE",
        "RADICAL_REPORT", "RADICAL_BASE", "RADICAL_CONFIG_USER_DIR")


@pytest.fixture
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin")
    monkeypatch.setenv("VIRTUAL_ENV", "/my/venv")  # the user's own: left alone
    assert _rp_env._users == 0
    yield
    while _rp_env._users:
        _rp_env.release()


def test_release_undoes_prepare_and_keeps_the_users_changes(clean_env, tmp_path):
    bindir = os.path.dirname(sys.executable)
    _rp_env.prepare(str(tmp_path / "a"))
    assert os.environ["RADICAL_BASE"] == str(tmp_path / "a")
    assert os.environ["RADICAL_PROFILE"] == "FALSE"
    assert os.environ["PATH"].split(os.pathsep)[0] == bindir
    assert os.environ["VIRTUAL_ENV"] == "/my/venv"
    # meanwhile the user works on: PATH grows, one of RP's settings is changed
    os.environ["PATH"] += os.pathsep + "/opt/tool/bin"
    os.environ["RADICAL_PROFILE"] = "TRUE"
    _rp_env.release()
    assert os.environ["PATH"] == "/usr/local/bin:/usr/bin:/opt/tool/bin"
    assert os.environ["RADICAL_PROFILE"] == "TRUE"  # the user's now
    for key in set(KEYS) - {"RADICAL_PROFILE"}:
        assert key not in os.environ, key
    assert os.environ["VIRTUAL_ENV"] == "/my/venv"


def test_the_last_release_restores_and_a_users_base_is_kept(clean_env, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("RADICAL_BASE", "/users/own")
    _rp_env.prepare(str(tmp_path / "a"))
    _rp_env.prepare(str(tmp_path / "b"))
    assert os.environ["RADICAL_BASE"] == "/users/own"
    assert os.environ["RADICAL_CONFIG_USER_DIR"] == str(tmp_path / "b")  # the newest's
    _rp_env.release()
    assert os.environ["RADICAL_CONFIG_USER_DIR"] == str(tmp_path / "b")  # still one user
    _rp_env.release()
    assert "RADICAL_CONFIG_USER_DIR" not in os.environ
    assert os.environ["RADICAL_BASE"] == "/users/own"
    assert os.environ["PATH"] == "/usr/local/bin:/usr/bin"
