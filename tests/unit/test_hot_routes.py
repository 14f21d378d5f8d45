"""common/routing.HotRoute: what a hot route matches is what Starlette's route matches, the route added."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from workspace_server.common.routing import hot_route


async def _handler(request: Request, body: bytes) -> Response:
    return Response(body)


def _scope(**overrides: Any) -> dict[str, Any]:
    return {"type": "http", "path": "/registry/heartbeat", "method": "POST", "root_path": "", **overrides}


SCOPES = [
    _scope(),
    _scope(method="GET"),
    _scope(path="/registry/heartbeat/"),
    _scope(path="/registry/heartbeats"),
    _scope(path="/registry"),
    _scope(root_path="/api", path="/api/registry/heartbeat"),
    _scope(root_path="/api", path="/registry/heartbeat"),
    _scope(path_params={"outer": "x"}),
]


def test_a_path_without_parameters_matches_as_starlettes_route() -> None:
    for template in ("/registry/heartbeat", "/workspaces/{id}/a2a"):
        hot = hot_route(template, _handler, "POST")
        plain = Route(template, _handler, methods=["POST"])
        for scope in [
            *SCOPES,
            _scope(path="/workspaces/abc/a2a"),
            _scope(path="/workspaces/abc/a2a", method="GET"),
        ]:
            match, child = hot.matches(dict(scope))
            expected, expected_child = plain.matches(dict(scope))
            assert match is expected, (template, scope)
            if match is not Match.NONE:
                assert child == {**expected_child, "route": hot}, (template, scope)


def test_a_path_without_parameters_is_compared_whole() -> None:
    """The regex's `$` also matches before a final newline; the string comparison does not."""
    assert (
        hot_route("/registry/heartbeat", _handler, "POST").matches(_scope(path="/registry/heartbeat\n"))[0]
        is Match.NONE
    )
