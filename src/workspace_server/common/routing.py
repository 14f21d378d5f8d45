"""Hot routes: the few endpoints every agent calls all the time, served ahead of FastAPI's router.

A hot route is a plain Starlette route mounted first in the app (app.py): it is matched before the
included routers are walked and runs without FastAPI's dependency injection (the dependency solver,
its cookie parsing and two exit stacks per request). Its handler takes the `Request` only and reads
the context with `get_ctx`; `ApiError` still goes through the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope


class HotRoute(Route):
    """A Starlette route that records itself as `scope["route"]`, as FastAPI's routes do: the metrics
    middleware labels requests by it (`middleware.RouteTemplates`)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def hot_route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> HotRoute:
    return HotRoute(path, endpoint, methods=[method])
