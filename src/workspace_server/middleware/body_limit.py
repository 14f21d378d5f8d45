"""MAX_BODY_BYTES: the cap on what a route may buffer of a request body."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.middleware.asgi import JSON_TYPE, Refusal, Verdict, answer, header, json_body

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

    def applies(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        path = scope.get("path", "")
        return not (path.endswith("/uploads") and self.OWN_CAPS.match(path))

    def admit(self, scope: Scope) -> Verdict:
        """A declared length over the cap is refused before the app runs."""
        if not self.applies(scope):
            return []
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return TOO_LARGE
        return []

    def counting(self, receive: Receive) -> Receive:
        """`receive`, raising BodyTooLarge once the body read so far passes the cap (chunked bodies)."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        return counting_receive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.applies(scope):
            await self.app(scope, receive, send)
            return
        verdict = self.admit(scope)
        if isinstance(verdict, Refusal):
            await answer(scope, receive, send, verdict)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self.counting(receive), tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await answer(scope, receive, send, TOO_LARGE)


# sent as it always was: without marking the request aborted
TOO_LARGE = Refusal(413, json_body({"error": BODY_TOO_LARGE}), [JSON_TYPE], aborts=False)
