"""The small ASGI helpers the middlewares share: header reads, default response headers, and refusing a
request (HTTP or WebSocket handshake) before the app runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.common.routing import Headers

# Set in the scope by a middleware that answers without reaching the router, so the metrics recorder knows
# to resolve the route template itself (the reference's gin has routed before any middleware runs).
ABORTED = "workspace_server.aborted"

JSON_TYPE = (b"content-type", b"application/json; charset=utf-8")


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def client_ip(scope: Scope) -> str:
    """The TCP peer; X-Forwarded-For is never consulted (spec 03 §4, #179)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A middleware's answer in place of the app's (`answer` sends it). `aborts`: the request is marked
    refused before routing (ABORTED), as `refuse` does; the body cap's 413 is sent without the mark."""

    status: int
    body: bytes = b""
    headers: Headers | None = None
    aborts: bool = True


# What a middleware decides about a request before the app runs: answer it now (`Refusal`), or let it
# through and add these headers to the response (an empty list: nothing to add). Each middleware class
# has an `admit(scope)` giving it; its own `__call__` and the hot lane's fused shell (hot_shell.py)
# both act on that one decision, so a rule has one owner whichever way a request travels.
Verdict = Refusal | Headers


def note_refusal(scope: Scope, refusal: Refusal) -> None:
    """A refusal that aborts marks the request refused before routing: the metrics recorder then resolves
    the route template itself (route_labels). The one writer of the mark, for both paths a request takes."""
    if refusal.aborts:
        scope[ABORTED] = True


async def answer(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    if refusal.aborts:
        await refuse(scope, receive, send, refusal.status, refusal.body, refusal.headers)
    else:
        await send_response(send, refusal.status, refusal.body, refusal.headers)


async def enact(verdict: Verdict, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """What a layered middleware does with its verdict: answer, or call the app adding the headers."""
    if isinstance(verdict, Refusal):
        await answer(scope, receive, send, verdict)
    elif verdict:
        await app(scope, receive, add_defaults(send, "http.response.start", verdict))
    else:
        await app(scope, receive, send)


def _with_defaults(message: Message, defaults: Headers) -> Message:
    """Add `defaults` to a response start, except names the handler already set (handlers may override)."""
    headers = list(message.get("headers", ()))
    present = {bytes(k).lower() for k, _ in headers}
    headers.extend((k, v) for k, v in defaults if k not in present)
    return {**message, "headers": headers}


def add_defaults(send: Send, start_type: str, defaults: Headers) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == start_type:
            message = _with_defaults(message, defaults)
        await send(message)

    return wrapped


def json_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def length_headers(body: bytes, headers: Headers | None = None) -> Headers:
    """A refusal's headers as sent: its own, then the body's content-length."""
    return [*(headers or []), (b"content-length", str(len(body)).encode())]


async def send_response(send: Send, status: int, body: bytes = b"", headers: Headers | None = None) -> None:
    all_headers = length_headers(body, headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def deny_websocket(
    scope: Scope, receive: Receive, send: Send, status: int, body: bytes = b"", headers: Headers | None = None
) -> None:
    """Refuse a WebSocket handshake with an HTTP status when the server supports it, else a plain 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        all_headers = length_headers(body, headers)
        await send({"type": "websocket.http.response.start", "status": status, "headers": all_headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, body: bytes = b"", headers: Headers | None = None
) -> None:
    note_refusal(scope, Refusal(status, body, headers))
    if scope["type"] == "websocket":
        await deny_websocket(scope, receive, send, status, body, headers)
    else:
        await send_response(send, status, body, headers)
