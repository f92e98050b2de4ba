"""Just enough of Redis's wire protocol (RESP2) to check a server: AUTH, PING, a reply."""

from __future__ import annotations

import asyncio

__all__ = ["command", "encode", "read_reply"]


def encode(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        raw = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> bytes | int | list | None:
    """One reply; an error reply (``-ERR ...``) raises ``RuntimeError`` with its text."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RuntimeError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        return (await reader.readexactly(n + 2))[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [await read_reply(reader) for _ in range(n)]
    raise RuntimeError(f"not a Redis reply: {line[:40]!r}")


async def command(address: str | tuple[str, int], *cmds: tuple[str, ...],
                  password: str | None = None, timeout: float = 5.0) -> list:
    """Send ``cmds`` (after AUTH when ``password``) to a Unix socket path or (host, port).

    Returns the replies of ``cmds``; raises ``OSError``/``RuntimeError``/``TimeoutError``.
    """
    async def run() -> list:
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address)
        else:
            reader, writer = await asyncio.open_connection(*address)
        try:
            todo = ([("AUTH", password)] if password else []) + list(cmds)
            writer.write(b"".join(encode(*c) for c in todo))
            await writer.drain()
            replies = [await read_reply(reader) for _ in todo]
            return replies[1:] if password else replies
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
    return await asyncio.wait_for(run(), timeout)
