"""A minimal keep-alive HTTP/1.1 client for load generation.

httpx costs 4–5 ms of CPU per request here, as much as the server under test, and both share two
cores; a benchmark limited by its own client measures nothing. This sends pre-encoded requests on
persistent connections and reads `status + Content-Length` bodies — all our JSON routes need.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RawConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        reader, writer = await self._ensure()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await reader.readexactly(length) if length else b""
        if close:
            writer.close()
            self.writer = None
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def encode_post(host: str, path: str, payload: Any, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawPool:
    """`size` persistent connections shared by callers; each request holds one connection."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._idle: asyncio.Queue[RawConnection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(RawConnection(host, port))
        self._all = list(self._idle._queue)  # type: ignore[attr-defined]

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = await self._idle.get()
        try:
            return await conn.request(raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.close()
            conn.writer = None
            return await conn.request(raw)  # one retry on a fresh connection
        finally:
            self._idle.put_nowait(conn)

    def close(self) -> None:
        for c in self._all:
            c.close()
