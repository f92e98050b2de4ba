"""A service's readiness check: ``GET`` a URL with the standard library, without blocking
the event loop (plain http over asyncio streams; anything else on a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
import urllib.request

__all__ = ["http_get"]


async def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """``GET url`` with the standard library (http only); returns (status, body)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        def fetch() -> tuple[int, bytes]:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        return await asyncio.wait_for(asyncio.to_thread(fetch), timeout + 1)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise ConnectionError(f"no HTTP answer from {url}")
        return int(status_line[1]), body
    return await asyncio.wait_for(go(), timeout)
