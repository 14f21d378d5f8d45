"""What every part of the workspace service shares: the context, the provisioner hook and the one
read-or-500 query. Background work runs on the app's task supervisor (`ctx.tasks`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.workspaces.schemas import ProvisionSpec

# The public face's logger name, for every part: log configuration and filters keep seeing one service.
log = logging.getLogger(__package__)

T = TypeVar("T")


class ProvisionerHook(Protocol):
    """The backend seam: the composition root sets the orchestrator as `ctx.provisioner`.

    `provision` runs in the background after create and owns every later status change; `stop` must be
    idempotent (stopping an unknown workspace is not an error). An optional `remove_volume(ws_id)` is
    called after a successful stop on delete.
    """

    async def provision(self, spec: ProvisionSpec) -> None: ...
    async def stop(self, ws_id: str) -> None: ...


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
        return self.ctx.provisioner

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
