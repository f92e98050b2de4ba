"""A deployment's Authorizer (JupyterHub roles, read-only users) governs the endpoints."""

from __future__ import annotations

import os

import pytest
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from rhapsody_lab.server.registry import dashboard_prefix, entry_key, write_entry


class NoRhapsody(Authorizer):
    """Allows everything but the rhapsody_lab resource."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "rhapsody_lab"


@pytest.fixture
def jp_server_config(registry):
    return {"ServerApp": {"jpserver_extensions": {"rhapsody_lab.server": True},
                          "authorizer_class": NoRhapsody}}


async def test_an_authorizer_can_refuse_the_sessions_and_the_proxy(jp_fetch, jp_base_url,
                                                                   registry):
    key = entry_key(os.getpid(), "s")
    write_entry({"key": key, "pid": os.getpid(), "uid": "s",
                 "dashboard": {"socket": "/nonexistent/bokeh.sock",
                               "prefix": dashboard_prefix(jp_base_url, key),
                               "plots": ["task-states"]}}, registry)
    assert (await jp_fetch("api", "status")).code == 200  # the user is authenticated
    for parts in (("rhapsody-lab", "sessions"),
                  ("rhapsody-lab", "dashboard", key, "task-states")):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(*parts)
        assert err.value.code == 403, parts
