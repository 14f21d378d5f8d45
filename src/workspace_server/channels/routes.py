"""Channel routes (spec 06 route table): `GET /channels/adapters` (open), `GET,POST ~/channels`,
`PATCH,DELETE ~/channels/:channelId`, `POST …/send`, `POST …/test` (WorkspaceAuth), `POST
/channels/discover` (AdminAuth) and `POST /webhooks/:type` (open: each delivery is verified by its
provider's signature or secret, channels/webhook.py; the static `/webhooks/github` routes win)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workspace_server.auth.deps import AdminAuth, Ctx, WorkspaceAuth
from workspace_server.channels import adapters, service, webhook
from workspace_server.common.errors import ApiError
from workspace_server.common.http import read_body, read_json
from workspace_server.openapi import body_schema, error_responses, text

router = APIRouter()

CHANNEL_BODY_MAX = 64 * 1024  # a channel config is a handful of short strings
CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": text(0, adapters.MAX_VALUE_CHARS),
    "propertyNames": {"maxLength": 64},
    "maxProperties": adapters.MAX_CONFIG_KEYS,
}


@router.get("/channels/adapters")
async def list_adapters() -> JSONResponse:
    return JSONResponse(adapters.list_adapters())


@router.get("/workspaces/{id}/channels")
async def list_channels(id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.list_channels(ctx, id))


_CREATE = body_schema(
    {
        "type": "object",
        "properties": {
            "channel_type": {"type": "string", "enum": sorted(adapters.ADAPTERS)},
            "config": CONFIG_SCHEMA,
            "allowed_users": {"type": "array", "items": text(1, 128), "maxItems": service.MAX_ALLOWED_USERS},
            "enabled": {"type": "boolean"},
            "channel_budget": {"type": ["integer", "null"], "minimum": 0, "maximum": service.MAX_BUDGET},
        },
        "required": ["channel_type"],
    },
    max_bytes=CHANNEL_BODY_MAX,
    errors={409: "The workspace already has a channel of this type"},
)


@router.post("/workspaces/{id}/channels", status_code=201, openapi_extra=_CREATE)
async def create_channel(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, CHANNEL_BODY_MAX)
    return JSONResponse(await service.create_channel(ctx, id, data), status_code=201)


_UPDATE = body_schema(
    {
        "type": "object",
        "properties": {
            "config": CONFIG_SCHEMA,
            "allowed_users": {"type": "array", "items": text(1, 128), "maxItems": service.MAX_ALLOWED_USERS},
            "enabled": {"type": "boolean"},
            "channel_budget": {"type": ["integer", "null"], "minimum": 0, "maximum": service.MAX_BUDGET},
        },
    },
    max_bytes=CHANNEL_BODY_MAX,
)


@router.patch("/workspaces/{id}/channels/{channel_id}", openapi_extra=_UPDATE)
async def update_channel(
    id: str, channel_id: str, request: Request, _: WorkspaceAuth, ctx: Ctx
) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, CHANNEL_BODY_MAX)
    return JSONResponse(await service.update_channel(ctx, id, channel_id, data))


@router.delete("/workspaces/{id}/channels/{channel_id}")
async def delete_channel(id: str, channel_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await service.delete_channel(ctx, id, channel_id))


_SEND = body_schema(
    {"type": "object", "properties": {"text": text(1, service.MAX_TEXT)}, "required": ["text"]},
    max_bytes=CHANNEL_BODY_MAX * 4,
    errors={429: "The channel's budget is spent", 502: "The provider refused or could not be reached"},
)


@router.post("/workspaces/{id}/channels/{channel_id}/send", openapi_extra=_SEND)
async def send_message(
    id: str, channel_id: str, request: Request, _: WorkspaceAuth, ctx: Ctx
) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, CHANNEL_BODY_MAX * 4)
    await service.send_text(ctx, id, channel_id, service.parse_text(data))
    return JSONResponse({"status": "sent"})


@router.post(
    "/workspaces/{id}/channels/{channel_id}/test",
    openapi_extra=error_responses(
        {429: "The channel's budget is spent", 502: "The provider refused or could not be reached"}
    ),
)
async def test_channel(id: str, channel_id: str, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    await service.send_text(ctx, id, channel_id, service.TEST_TEXT)
    return JSONResponse({"status": "ok", "message": "test message sent"})


_DISCOVER = body_schema(
    {
        "type": "object",
        "properties": {"channel_type": text(), "bot_token": text(1, 256), "workspace_id": text(1)},
        "required": ["bot_token", "workspace_id"],
    },
    max_bytes=CHANNEL_BODY_MAX,
)


@router.post("/channels/discover", openapi_extra=_DISCOVER)
async def discover(request: Request, _: AdminAuth, ctx: Ctx) -> JSONResponse:
    data = await read_json(request, service.BAD_BODY, CHANNEL_BODY_MAX)
    return JSONResponse(await service.discover(ctx, data))


_WEBHOOK = body_schema(
    {"type": "object"},
    description="A provider's delivery (Slack Events API, Telegram update, Discord interaction, Lark "
    "event), verified by the provider's signature or secret.",
    errors={401: "The delivery's signature or secret does not verify", 404: "No such channel type"},
)


@router.post("/webhooks/{type}", openapi_extra=_WEBHOOK)
async def channel_webhook(type: str, request: Request, ctx: Ctx) -> JSONResponse:
    if type not in adapters.ADAPTERS:
        raise ApiError(404, "unknown channel type")
    body = await read_body(request, ctx.settings.CHANNEL_WEBHOOK_MAX_BYTES)
    status, payload = await webhook.receive(ctx, type, body, request.headers)
    return JSONResponse(payload, status_code=status)
