"""Hot routes: the few endpoints every agent calls all the time (the heartbeat, the A2A proxy).

A hot route is served by `HotLane`, outside every middleware (FastAPI's own included): a request that
fully matches one (path and method) runs through the hot shell (middleware/hot_shell.py: the same
middlewares' decisions, sharing the rate limiter and the metrics, in one callable) straight into the
endpoint; the server's own protocol answers it below ASGI (serving.py), any other server through the
app. It skips FastAPI's error, telemetry and exception middlewares, exit stack, router walk and
dependency solver: about a third of the server's CPU for a proxied A2A call (bench/README.md). Its
handler takes the `Request` and the whole body (`(request, body)`; the lane reads the body once, under the
body cap and the route's own cut) and reads the context with `get_ctx`.

What a client sees does not change:
- errors render as on every other route, by the same functions the app's handlers call
  (`common.errors`): `ApiError`, `HTTPException`, the database or Redis being away (503), anything else
  a logged 500 with no detail;
- the routes also stay in the app's router, so a wrong method (404), a trailing slash (redirect) and
  the route table the metrics labels come from behave exactly as for any route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.common.errors import (
    ApiError,
    api_error_response,
    client_gone_response,
    http_error_response,
    unhandled_response,
)

Headers = list[tuple[bytes, bytes]]
# A request's body as the lane gets it: whole (the server's protocol collected it from the parser), or the
# ASGI channel to read it from (any other server, a streamed or large body, `Expect: 100-continue`).
Body = bytes | Receive
HotHandler = Callable[[Request, bytes], Awaitable[Response]]


@dataclass(slots=True)
class Answer:
    """A whole response: the status, its headers (content-length among them) and its body."""

    status: int
    headers: Headers
    body: bytes


class Lane(Protocol):
    """The hot shell (middleware/hot_shell.py): an ASGI app, and the same answer as a value."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...
    async def respond(self, scope: Scope, body: Body) -> Answer: ...


class HotRoute(Route):
    """A Starlette route that records itself as `scope["route"]`, as FastAPI's routes do: the metrics
    middleware labels requests by it (`middleware.RouteTemplates`).

    Every request passes the hot lane, so a path that cannot match (it does not end with the template's
    literal tail, e.g. `/a2a`) is turned away before the route's regex.

    A path without parameters (the heartbeat's) is compared as a string, without the regex.

    `keep`: the route's own cut of the body, the first `keep` bytes; the rest is read and dropped."""

    def __init__(self, path: str, endpoint: HotHandler, methods: list[str], keep: int | None = None) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.tail = path[path.rfind("}") + 1 :]
        self.static = not self.param_convertors
        self.keep = keep

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            if self.static and not scope.get("root_path"):
                return self._static_match(scope)
            if not scope["path"].endswith(self.tail):
                return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child

    def _static_match(self, scope: Scope) -> tuple[Match, Scope]:
        """What Route.matches gives for a path without parameters, the route added."""
        if scope["path"] != self.path:
            return Match.NONE, {}
        child = {"endpoint": self.endpoint, "path_params": dict(scope.get("path_params", {})), "route": self}
        return (Match.PARTIAL if self.methods and scope["method"] not in self.methods else Match.FULL), child


def hot_route(path: str, endpoint: HotHandler, method: str, keep: int | None = None) -> HotRoute:
    return HotRoute(path, endpoint, methods=[method], keep=keep)


async def read_whole(receive: Receive, keep: int | None) -> bytes:
    """The body from `receive`, its first `keep` bytes if set (the rest read and dropped); a client gone
    mid-body raises ClientDisconnect. Straight from `receive` (what `request.body()` does, without its
    generator and bookkeeping)."""
    chunks: list[bytes] = []
    size = 0
    limit = keep if keep is not None else -1
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if limit < 0:
            chunks.append(chunk)
        elif size < limit:
            chunks.append(chunk[: limit - size])
        size += len(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PrebuiltResponse(Response):
    """A constant answer rendered once (status, body, headers), for a hot route to return every time.

    It sends what the response it was made from sends; only nothing is rendered per request. Each answer
    gets its own copy of the header list, since a layer may extend a response's headers in place."""

    def __init__(self, response: Response) -> None:  # not Response.__init__: nothing is rendered again
        if response.background is not None:
            raise ValueError("a prebuilt response cannot carry a background task")
        self.status_code = response.status_code
        self.body = response.body
        self.raw_headers = list(response.raw_headers)
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # hot routes are HTTP only; anything else as Response does it
            await super().__call__(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": list(self.raw_headers)}
        )
        await send({"type": "http.response.body", "body": self.body})


class HotEndpoint:
    """The innermost part of the hot lane: the matched route's response to the whole body, its errors
    rendered (reading the body's included: the cap's 413, a client gone)."""

    async def respond(self, scope: Scope, body: Body) -> Response:
        route: HotRoute = scope["route"]
        request = Request(scope)  # the handler gets the body whole: nothing reads `receive` after this
        try:
            if isinstance(body, bytes):
                whole = body if route.keep is None else body[: route.keep]
            else:
                whole = await read_whole(body, route.keep)
            response: Response = await route.endpoint(request, whole)
        except ApiError as exc:
            response = api_error_response(exc)
        except HTTPException as exc:  # also the body cap's 413, raised from `receive` mid-read
            response = http_error_response(exc)
        except ClientDisconnect:
            response = client_gone_response(request)
        except Exception as exc:
            response = unhandled_response(request.method, request.url.path, exc)
        if response.background is not None or not isinstance(getattr(response, "body", None), bytes):
            # the lane answers with one whole response (hot_shell.Answer): nothing streams or runs after
            raise TypeError(f"hot route {route.path} must answer with a whole response, no background task")
        return response


class HotLane:
    """Routes a full match of a hot route into `lane` (the shell around `HotEndpoint`), all else to `app`
    (the rest of the stack, set by `wrapping` when the app builds it).

    The server's protocol (serving.py) also enters the lane itself, below ASGI: `direct` tells it whether
    a request is for the lane and gives the scope what the app's own entry (FastAPI, Starlette, this lane)
    would have added on the way."""

    def __init__(self, routes: Sequence[HotRoute], lane: Lane, owner: Starlette) -> None:
        self.routes = tuple(routes)
        self.lane = lane
        self.owner = owner
        self.app: ASGIApp | None = None

    def wrapping(self, app: ASGIApp) -> HotLane:
        self.app = app
        return self

    def enter(self, scope: Scope) -> bool:
        """Whether `scope` fully matches a hot route (path and method); if so it now holds the route's path
        parameters and the route."""
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return True
        return False

    def direct(self, scope: Scope) -> bool:
        """`enter`, for a request the app's own entry has not seen: with the keys it sets (`app`, and
        FastAPI's `root_path` when it has one)."""
        if not self.enter(scope):
            return False
        scope["app"] = self.owner
        root_path = getattr(self.owner, "root_path", "")
        if root_path:
            scope["root_path"] = root_path
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.enter(scope):
            await self.lane(scope, receive, send)
            return
        assert self.app is not None, "HotLane used before the app built its stack"
        await self.app(scope, receive, send)
