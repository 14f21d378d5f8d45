"""Helpers shared by the secrets tests (no tests here)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import ClientFactory
from workspace_server.auth.tokens import issue_workspace_token
from workspace_server.common.ids import new_id
from workspace_server.db.schema import global_secrets, workspace_secrets
from workspace_server.secrets.service import drain_restarts
from workspace_server.workspaces.store import insert_workspace

ADMIN = "admin-secret"
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


ADMIN_H = bearer(ADMIN)


async def admin_client(client_factory: ClientFactory, **overrides: Any) -> httpx.AsyncClient:
    return await client_factory(ADMIN_TOKEN=ADMIN, **overrides)


async def make_ws(
    client: httpx.AsyncClient,
    *,
    status: str = "online",
    runtime: str = "langgraph",
    parent_id: str | None = None,
) -> str:
    ws_id = new_id()
    async with ctx_of(client).engine.begin() as conn:
        await insert_workspace(
            conn, id=ws_id, name=f"ws-{ws_id[:6]}", status=status, runtime=runtime, parent_id=parent_id
        )
    return ws_id


async def issue(client: httpx.AsyncClient, ws_id: str) -> str:
    async with ctx_of(client).engine.begin() as conn:
        return await issue_workspace_token(conn, ws_id)


async def ws_rows(client: httpx.AsyncClient, ws_id: str) -> list[Any]:
    t = workspace_secrets
    q = sa.select(t).where(t.c.workspace_id == ws_id).order_by(t.c.key)
    async with ctx_of(client).engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def global_rows(client: httpx.AsyncClient) -> list[Any]:
    async with ctx_of(client).engine.connect() as conn:
        return list((await conn.execute(sa.select(global_secrets).order_by(global_secrets.c.key))).all())


class RestartRecorder:
    """Stands in for the orchestrator's restart hook; `await rec.settled()` waits for fired restarts."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.ctx = ctx_of(client)
        self.ids: list[str] = []
        self.ctx.restart_hook = self

    async def __call__(self, ws_id: str) -> None:
        self.ids.append(ws_id)

    async def settled(self) -> list[str]:
        await drain_restarts(self.ctx)
        out = sorted(self.ids)
        self.ids.clear()
        return out
