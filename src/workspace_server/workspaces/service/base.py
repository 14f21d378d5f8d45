"""What every part of the workspace service shares: the context, the provisioner hook, the background-task
set and the one read-or-500 query."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.workspaces.schemas import ProvisionSpec

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)

T = TypeVar("T")


class ProvisionerHook(Protocol):
    """The backend seam: the provisioner/orchestrator registers itself in `ctx.extras["provisioner"]`.

    `provision` runs in the background after create and owns every later status change; `stop` must be
    idempotent (stopping an unknown workspace is not an error). An optional `remove_volume(ws_id)` is
    called after a successful stop on delete.
    """

    async def provision(self, spec: ProvisionSpec) -> None: ...
    async def stop(self, ws_id: str) -> None: ...


# Fire-and-forget work must be referenced until done or the event loop may drop it mid-flight.
_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def truncate_utf8(text: str, max_bytes: int) -> str:
    """At most max_bytes of UTF-8, never splitting a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode(errors="ignore")


class ServiceBase:
    """The state the service's parts (create, update, delete, queries) read; `WorkspaceService` joins them."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.engine = ctx.engine

    @property
    def provisioner(self) -> ProvisionerHook | None:
        hook: ProvisionerHook | None = self.ctx.extras.get("provisioner")
        return hook

    async def query(
        self, fn: Callable[..., Awaitable[T]], *args: Any, failed: str, answer: str = "query failed"
    ) -> T:
        """One read on its own connection. Any error is logged as `failed` and answered 500 `answer`: the
        reads of a workspace's views, state, config and budget, and the team's lookups, all fail this way."""
        try:
            async with self.engine.connect() as conn:
                return await fn(conn, *args)
        except Exception:
            log.exception(failed)
            raise ApiError(500, answer) from None
