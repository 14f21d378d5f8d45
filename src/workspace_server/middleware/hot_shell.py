"""The hot lane's HTTP shell: every middleware of the stack, taken as one ASGI callable.

A hot route (common/routing.py) is called by every agent all the time, and seven nested middlewares cost
each request seven coroutine frames, seven send wrappers and a copy of the response start per header
group: about a sixth of the server's CPU for a proxied A2A call (bench/README.md). `HotShell` asks the
same middleware objects for their decisions (`admit`, middleware/asgi.py `Verdict`) in the stack's order
and applies them with one send wrapper. The rules stay in their middleware: this module owns only the
order in which the answers combine, and that is the layered stack's:

- a refusal by a layer carries the headers of the layers outside it only (a 429 has no security headers);
- on a response the headers of inner layers win over outer ones, and the handler's own win over all;
- the metrics recorder, outermost, sees every answer, refusals and the body cap's 413 included.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.middleware.asgi import Headers, Refusal, Verdict, answer
from workspace_server.middleware.body_limit import TOO_LARGE, BodyLimitMiddleware, BodyTooLarge
from workspace_server.middleware.metrics import MetricsMiddleware


class Admits(Protocol):
    def admit(self, scope: Scope) -> Verdict: ...


class HotShell:
    """`guards` outermost first, as the stack orders them; the body cap among them where it sits."""

    def __init__(
        self,
        endpoint: ASGIApp,
        guards: Sequence[Admits],
        body_limit: BodyLimitMiddleware,
        metrics: MetricsMiddleware,
    ) -> None:
        self.endpoint = endpoint
        self.guards = tuple(guards)
        self.body_limit = body_limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 0  # the response's, once started; 500 is recorded when the endpoint raised before
        groups: list[Headers] = []  # header groups of the layers passed so far, outermost first

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if groups:
                    message = _with_groups(message, groups)
            await send(message)

        try:
            for guard in self.guards:
                verdict = guard.admit(scope)
                if isinstance(verdict, Refusal):
                    await answer(scope, receive, wrapped, verdict)
                    return
                if verdict:
                    groups.append(verdict)
            if self.body_limit.applies(scope):  # a chunked body is counted as it streams in
                receive = self.body_limit.counting(receive)
            try:
                await self.endpoint(scope, receive, wrapped)
            except BodyTooLarge:
                if status:
                    raise
                await answer(scope, receive, wrapped, TOO_LARGE)
        finally:
            self.metrics.record(scope, status or 500, start)


def _with_groups(message: Message, groups: list[Headers]) -> Message:
    """The response start with each group added, innermost first, where its name is not set yet — what
    the layered stack's `add_defaults` wrappers do one after another."""
    headers = list(message.get("headers", ()))
    present = {bytes(k).lower() for k, _ in headers}
    for group in reversed(groups):
        added = [(k, v) for k, v in group if k not in present]
        headers += added
        present.update(k for k, _ in added)
    return {**message, "headers": headers}
