"""MAX_BODY_BYTES: the cap on what a route may buffer of a request body."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.middleware.asgi import JSON_TYPE, header, json_body, send_response

BODY_TOO_LARGE = "request body too large"


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a body passes the cap. An HTTPException, so FastAPI's body parsing lets it
    through (it turns other exceptions into 400) and the app's handler renders the 413 JSON."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=BODY_TOO_LARGE)


class BodyLimitMiddleware:
    """No route buffers more than MAX_BODY_BYTES: a declared length over the cap is refused before the app
    runs; an undeclared (chunked) body is counted as it streams in."""

    # routes that stream larger bodies and enforce their own caps (chat uploads: 50 MiB, spec 04 §4)
    OWN_CAPS = re.compile(r"^/workspaces/[^/]+/chat/uploads$")

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.OWN_CAPS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await send_response(send, 413, json_body({"error": BODY_TOO_LARGE}), [JSON_TYPE])
            return
        started = False
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await send_response(send, 413, json_body({"error": BODY_TOO_LARGE}), [JSON_TYPE])
