"""Shared helpers for the A2A integration tests (no tests of its own).

`StubAgent` is an A2A agent in the test process whose behaviour the test switches at will:
- "echo": answers `message/send` like the reference agent (spec 07 §5);
- "busy": reads the request and closes the connection without answering (an EOF before any reply —
  what spec 04 §1.6 calls busy: the agent dropped the request unprocessed);
- "hang": reads the request and answers only when released (an agent that went quiet);
- "status": answers with a fixed status and body; "cut": promises a long body and sends a short one.
Every request it reads is recorded; `processed` holds the messageIds it actually answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import sqlalchemy as sa

from workspace_server.context import AppContext
from workspace_server.db.schema import a2a_queue, activity_logs


class StubAgent:
    def __init__(self) -> None:
        self.mode = "echo"
        self.status = 200
        self.body = b"{}"
        self.received: list[Any] = []
        self.processed: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    req = json.loads(raw)
                except ValueError:
                    req = None
                with agent._lock:
                    agent.received.append(req)
                    mode = agent.mode
                if mode == "busy":
                    self.close_connection = True
                    return
                if mode == "hang":
                    agent.release.wait(30)
                if mode == "cut":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"jsonrpc":"2.0","result":' + b" " * 100)
                    self.close_connection = True
                    return
                if mode == "status":
                    self._send(agent.status, agent.body)
                    return
                self._send(200, agent.echo(req))

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def echo(self, req: Any) -> bytes:
        rid = req.get("id") if isinstance(req, dict) else None
        message = (req or {}).get("params", {}).get("message", {}) if isinstance(req, dict) else {}
        texts = [p.get("text", "") for p in message.get("parts", []) if isinstance(p, dict)]
        with self._lock:
            self.processed.append(str(message.get("messageId")))
        result = {
            "kind": "message",
            "messageId": "reply-1",
            "role": "agent",
            "parts": [{"kind": "text", "text": "echo: " + " ".join(texts)}],
        }
        return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}, separators=(",", ":")).encode()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def message(text: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A bare A2A body (no jsonrpc envelope), as the canvas sends it."""
    msg: dict[str, Any] = {"role": "user", "parts": [{"kind": "text", "text": text}]}
    if message_id:
        msg["messageId"] = message_id
    return {"method": "message/send", "params": {"message": msg}, **extra}


async def wait_for(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await fn()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def activity(ctx: AppContext, ws_id: str, activity_type: str = "a2a_receive") -> list[Any]:
    t = activity_logs
    q = (
        sa.select(t)
        .where(t.c.workspace_id == ws_id, t.c.activity_type == activity_type)
        .order_by(t.c.created_at, t.c.id)
    )
    async with ctx.engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def queue_rows(ctx: AppContext, ws_id: str | None = None) -> list[Any]:
    q = sa.select(a2a_queue).order_by(a2a_queue.c.enqueued_at, a2a_queue.c.id)
    if ws_id is not None:
        q = q.where(a2a_queue.c.workspace_id == ws_id)
    async with ctx.engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def heartbeat(client: httpx.AsyncClient, ws_id: str, active_tasks: int = 0, **headers: str) -> None:
    body = {
        "workspace_id": ws_id,
        "error_rate": 0,
        "sample_error": "",
        "active_tasks": active_tasks,
        "current_task": "",
        "uptime_seconds": 10,
    }
    r = await client.post("/registry/heartbeat", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def drained(ctx: Any) -> None:
    """Wait for the queue drains that heartbeats started (the registry runs them in the background)."""
    from workspace_server.registry.service import DRAIN_GROUP

    await asyncio.gather(*ctx.tasks.tasks(DRAIN_GROUP), return_exceptions=True)
