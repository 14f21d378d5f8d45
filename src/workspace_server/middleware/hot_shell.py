"""The hot lane's HTTP shell: every middleware of the stack, taken as one callable that answers a request.

A hot route (common/routing.py) is called by every agent all the time, and seven nested middlewares cost
each request seven coroutine frames, seven send wrappers and a copy of the response start per header
group: about a sixth of the server's CPU for a proxied A2A call (bench/README.md). `HotShell` asks the
same middleware objects for their decisions (`admit`, middleware/asgi.py `Verdict`) in the stack's order
and combines them into one `Answer` (status, headers, body). The rules stay in their middleware: this
module owns only the order in which the answers combine, and that is the layered stack's:

- a refusal by a layer carries the headers of the layers outside it only (a 429 has no security headers);
- on a response the headers of inner layers win over outer ones, and the handler's own win over all;
- the metrics recorder, outermost, sees every answer, refusals and the body cap's 413 included.

`respond` gives the answer as a value: the server's own hot path (serving.py) writes it with one send,
without an ASGI cycle, mostly for a body it collected whole from the parser; `__call__` reads the body
from `receive` and sends the answer through ASGI (any other server, the in-process test client).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from workspace_server.common.routing import Answer, Body
from workspace_server.middleware.asgi import Headers, Refusal, Verdict, length_headers, note_refusal
from workspace_server.middleware.body_limit import BodyLimitMiddleware
from workspace_server.middleware.metrics import MetricsMiddleware


class Admits(Protocol):
    def admit(self, scope: Scope) -> Verdict: ...


class Endpoint(Protocol):
    """The innermost part of the lane (common/routing.HotEndpoint): the route's response, errors rendered."""

    async def respond(self, scope: Scope, body: Body) -> Response: ...


class HotShell:
    """`guards` outermost first, as the stack orders them; the body cap among them where it sits."""

    def __init__(
        self,
        endpoint: Endpoint,
        guards: Sequence[Admits],
        body_limit: BodyLimitMiddleware,
        metrics: MetricsMiddleware,
    ) -> None:
        self.endpoint = endpoint
        self.guards = tuple(guards)
        self.body_limit = body_limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.respond(scope, receive)
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def respond(self, scope: Scope, body: Body) -> Answer:
        """The answer to a request that fully matched a hot route (`scope["route"]` set). `body`: whole, or
        the `receive` to read it from (the endpoint reads it, under the body cap)."""
        start = time.perf_counter()
        status = 500  # recorded when something below raised past the endpoint's own error rendering
        try:
            answer = await self._answer(scope, body)
            status = answer.status
            return answer
        finally:
            self.metrics.record(scope, status, start)

    async def _answer(self, scope: Scope, body: Body) -> Answer:
        groups: list[Headers] = []  # header groups of the layers passed so far, outermost first
        for guard in self.guards:
            verdict = guard.admit(scope)
            if isinstance(verdict, Refusal):
                return _refused(scope, verdict, groups)
            if verdict:
                groups.append(verdict)
        # A whole body had a declared length, which the body cap's `admit` has just checked; one still to be
        # read may stream in chunks, counted as they come.
        if not isinstance(body, bytes) and self.body_limit.applies(scope):
            body = self.body_limit.counting(body)
        response = await self.endpoint.respond(scope, body)  # the cap's 413 mid-read: rendered there
        return Answer(response.status_code, _with_groups(response.raw_headers, groups), bytes(response.body))


def _refused(scope: Scope, refusal: Refusal, groups: list[Headers]) -> Answer:
    """What `asgi.answer` sends for the refusal, with the headers of the layers outside the refusing one."""
    note_refusal(scope, refusal)
    headers = length_headers(refusal.body, refusal.headers)
    return Answer(refusal.status, _with_groups(headers, groups), refusal.body)


def _with_groups(own: Headers, groups: list[Headers]) -> Headers:
    """`own` with each group added, innermost first, where its name is not set yet — what the layered
    stack's `add_defaults` wrappers do one after another. Always a new list (`own` may be a shared one)."""
    headers = list(own)
    if not groups:
        return headers
    present = {bytes(k).lower() for k, _ in headers}
    for group in reversed(groups):
        added = [pair for pair in group if pair[0] not in present]
        headers += added
        present.update([pair[0] for pair in added])
    return headers
