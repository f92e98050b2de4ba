"""Helpers of the inference tests: the stand-in server and what it received."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request

from rhapsody_lab.services import Service, free_port

FAKE_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_openai_server.py")


def start_fake(delay: float = 0.0, model: str = "fake-model") -> Service:
    port = free_port()
    svc = Service("fake-openai", [sys.executable, FAKE_SERVER, "--port", str(port),
                                  "--delay", str(delay), "--model", model],
                  ready_url=f"http://127.0.0.1:{port}/v1/models",
                  endpoint=f"http://127.0.0.1:{port}/v1", startup_timeout=30,
                  poll_interval=0.05, stop_timeout=3)
    asyncio.run(svc.start())
    return svc


def seen_requests(svc: Service) -> list[dict]:
    """The request bodies the stand-in server received."""
    url = svc.endpoint.rsplit("/v1", 1)[0] + "/debug/requests"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())
