"""Secrets routes (spec 05 §1, spec 06 §1.3).

Workspace scope sits behind WorkspaceAuth, global scope behind AdminAuth (`/settings/secrets` and its
legacy alias `/admin/secrets`). The reference validates `:id` against a lowercase-only UUID pattern after
auth, so an uppercase UUID is a 400 here too.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from workspace_server import authz
from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth, credentials
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_json
from workspace_server.context import AppContext
from workspace_server.openapi import body_schema, nullable, obj, text
from workspace_server.secrets import service

router = APIRouter()

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_BAD_BODY = "invalid request body"

SECRET_BODY = obj(
    "key",
    "value",
    key=text(1, pattern="^[A-Za-z_][A-Za-z0-9_]*$", examples=["OPENAI_API_KEY"]),
    value=text(1),
)


def _ws_id(raw: str) -> str:
    if not _UUID.match(raw):
        raise ApiError(400, "invalid workspace ID")
    return raw


def _text(value: Any, *, allow_empty: bool = False) -> str:
    """A JSON string that can be stored and used as env: UTF-8 encodable and NUL-free, else 400."""
    if not isinstance(value, str) or (not value and not allow_empty) or "\x00" in value:
        raise ApiError(400, _BAD_BODY)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise ApiError(400, _BAD_BODY) from None
    return value


async def _object(request: Request, ctx: AppContext) -> dict[str, Any]:
    data = await read_json(request, _BAD_BODY, ctx.settings.MAX_BODY_BYTES)
    if not isinstance(data, dict):
        raise ApiError(400, _BAD_BODY)
    return data


async def _key_value(request: Request, ctx: AppContext) -> tuple[str, str]:
    data = await _object(request, ctx)
    return _text(data.get("key")), _text(data.get("value"))


# ---- workspace scope ----


@router.get("/workspaces/{id}/secrets")
async def list_secrets(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> list[dict[str, Any]]:
    return await service.list_workspace(ctx, _ws_id(id))


@router.get("/workspaces/{id}/secrets/values")
async def secret_values(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    ws_id = _ws_id(id)
    # plaintext leaves only to the workspace itself once it has a live token (tokenless: grandfathered)
    await authz.token_holder(ctx, credentials(request), ws_id, tokenless="always")
    return await service.values(ctx, ws_id)


@router.api_route("/workspaces/{id}/secrets", methods=["POST", "PUT"], openapi_extra=body_schema(SECRET_BODY))
async def set_secret(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    ws_id = _ws_id(id)
    key, value = await _key_value(request, ctx)
    return await service.set_workspace_secret(ctx, ws_id, key, value)


@router.delete("/workspaces/{id}/secrets/{key:path}")
async def delete_secret(id: str, key: str, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    return await service.delete_workspace_secret(ctx, _ws_id(id), key)


@router.get("/workspaces/{id}/model")
async def get_model(id: str, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    return await service.get_model(ctx, _ws_id(id))


@router.put("/workspaces/{id}/model", openapi_extra=body_schema(obj(model=nullable(text()))))
async def set_model(id: str, request: Request, ctx: Ctx, _auth: WorkspaceAuth) -> dict[str, str]:
    ws_id = _ws_id(id)
    data = await _object(request, ctx)
    raw = data.get("model")
    # absent or null binds to "" in the reference, which clears the model
    model = _text("" if raw is None else raw, allow_empty=True)
    return await service.set_model(ctx, ws_id, model)


# ---- global scope ----


async def _list_global(ctx: AppContext) -> list[dict[str, Any]]:
    return await service.list_global(ctx)


async def _set_global(request: Request, ctx: AppContext) -> dict[str, str]:
    key, value = await _key_value(request, ctx)
    return await service.set_global_secret(ctx, key, value)


@router.get("/settings/secrets")
async def list_global_settings(ctx: Ctx, _auth: AdminAuth) -> list[dict[str, Any]]:
    return await _list_global(ctx)


@router.api_route("/settings/secrets", methods=["PUT", "POST"], openapi_extra=body_schema(SECRET_BODY))
async def set_global_settings(request: Request, ctx: Ctx, _auth: AdminAuth) -> dict[str, str]:
    return await _set_global(request, ctx)


@router.delete("/settings/secrets/{key:path}")
async def delete_global_settings(key: str, ctx: Ctx, _auth: AdminAuth) -> dict[str, str]:
    return await service.delete_global_secret(ctx, key)


@router.get("/admin/secrets")
async def list_global_legacy(ctx: Ctx, _auth: AdminAuth) -> list[dict[str, Any]]:
    return await _list_global(ctx)


@router.post("/admin/secrets", openapi_extra=body_schema(SECRET_BODY))
async def set_global_legacy(request: Request, ctx: Ctx, _auth: AdminAuth) -> dict[str, str]:
    return await _set_global(request, ctx)


@router.delete("/admin/secrets/{key:path}")
async def delete_global_legacy(key: str, ctx: Ctx, _auth: AdminAuth) -> dict[str, str]:
    return await service.delete_global_secret(ctx, key)
