"""JSON-RPC dispatch for the MCP bridge, built from the `mcp` SDK's protocol types.

Why not the SDK's own server (`mcp.server.lowlevel.Server` / the streamable-HTTP session manager)? The
wire format is pinned by the reference (spec 04 §5) and the SDK's server answers differently on every
point clients of the reference rely on: it negotiates the client's protocol version instead of
answering "2024-11-05", answers notifications with 202 and no body, says "Method not found" without
the method, reports tool failures as `isError` results instead of JSON-RPC error -32000, and requires
streamable-HTTP Accept headers. So the dispatcher is ours and thin; the messages it produces are the
SDK's models (`InitializeResult`, `Tool`, `CallToolResult`/`TextContent`, `JSONRPCResponse`,
`JSONRPCError`/`ErrorData`), serialised with the fields they were given (`exclude_unset`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mcp import types
from pydantic import BaseModel, StrictStr, ValidationError

from workspace_server.common.jsonnum import decode_document
from workspace_server.context import AppContext
from workspace_server.mcp import tools

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2024-11-05"
SERVER_NAME = "molecule-a2a"
SERVER_VERSION = "1.0.0"
TOOL_ERROR = -32000


class _Request(BaseModel):
    """What the reference's decoder accepts: any id, a string method, any params (a batch is an error)."""

    jsonrpc: StrictStr = ""
    id: Any = None
    method: StrictStr = ""
    params: Any = None


class _CallParams(BaseModel):
    name: StrictStr = ""
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


def _dump(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return out


def _result(req_id: Any, result: BaseModel | dict[str, Any]) -> dict[str, Any]:
    payload = result if isinstance(result, dict) else _dump(result)
    return {"jsonrpc": "2.0", "id": req_id, "result": payload}


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": _dump(types.ErrorData(code=code, message=message))}


def initialize_result() -> types.InitializeResult:
    return types.InitializeResult(
        protocol_version=PROTOCOL_VERSION,
        capabilities=types.ServerCapabilities(tools=types.ToolsCapability(list_changed=False)),
        server_info=types.Implementation(name=SERVER_NAME, version=SERVER_VERSION),
    )


def parse_request(raw: bytes) -> _Request | None:
    """The request, or None when the body is not one JSON-RPC object (→ HTTP 400, -32700)."""
    try:
        data = decode_document(raw)  # the rules of every body (common/http.py), as JSON-RPC's parse error
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return _Request.model_validate(data)
    except ValidationError:
        return None


async def handle(ctx: AppContext, ws_id: str, raw: bytes) -> Reply:
    req = parse_request(raw)
    if req is None:
        return Reply(400, _error(None, types.PARSE_ERROR, "parse error: invalid JSON-RPC request"))
    return Reply(200, await dispatch(ctx, ws_id, req))


async def dispatch(ctx: AppContext, ws_id: str, req: _Request) -> dict[str, Any]:
    if req.method == "initialize":
        return _result(req.id, initialize_result())
    if req.method == "notifications/initialized":
        return {"jsonrpc": "2.0", "id": req.id}  # the reference answers a notification with no result
    if req.method == "tools/list":
        listed = [_dump(t) for t in tools.tool_list(ctx)]
        return _result(req.id, {"tools": listed})
    if req.method == "tools/call":
        return await _call(ctx, ws_id, req)
    return _error(req.id, types.METHOD_NOT_FOUND, f"method not found: {req.method}")


async def _call(ctx: AppContext, ws_id: str, req: _Request) -> dict[str, Any]:
    if not isinstance(req.params, dict):
        return _error(req.id, types.INVALID_PARAMS, "invalid params: params must be an object")
    try:
        params = _CallParams.model_validate(req.params)
    except ValidationError:
        return _error(
            req.id, types.INVALID_PARAMS, "invalid params: name must be a string, arguments an object"
        )
    try:
        text = await tools.call_tool(ctx, ws_id, params.name, params.arguments or {})
    except tools.ToolError as exc:
        return _error(req.id, TOOL_ERROR, str(exc))
    except Exception:
        log.exception("MCP tool %s failed for %s", params.name, ws_id)
        return _error(req.id, TOOL_ERROR, "internal error")
    return _result(req.id, types.CallToolResult(content=[types.TextContent(type="text", text=text)]))
