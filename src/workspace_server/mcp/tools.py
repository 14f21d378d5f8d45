"""The MCP bridge's tools (spec 04 §5): definitions as the SDK's `Tool` models, and their implementations.

Each tool returns the text the reference returns (often JSON, formatted as Go's encoder does) or raises
`ToolError`, whose message becomes the JSON-RPC error (-32000). Where the reference had quirks (spec
04 §8.7) the tools reuse the platform's own paths instead of side channels:
- `delegate_task` goes through the A2A proxy (`a2a.proxy.proxy_a2a`), so it posts to the agent's URL
  itself (not `<url>/a2a`), with the hierarchy, budget, SSRF, hibernation-wake and queue rules and an
  activity row on the target;
- `delegate_task_async` is a tracked delegation (`a2a.delegation.delegate`), so `check_task_status`
  finds it and reports the reply text once it is there;
- `send_message_to_user` is the `notify` path, so the message also survives a canvas reload.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp import types

from workspace_server.common.errors import ApiError
from workspace_server.common.ids import uuid_or_raw
from workspace_server.context import AppContext
from workspace_server.mcp import store
from workspace_server.memories import service as memories
from workspace_server.registry.access import can_communicate
from workspace_server.registry.store import parent_of, peer_rows
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

SYNC_TIMEOUT_SECONDS = 30
SEND_MESSAGE = "send_message_to_user"

_TARGET = {"type": "string", "description": "Target workspace ID (from list_peers)"}
_TASK = {"type": "string", "description": "The task description to send to the target workspace"}
_NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any]) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema)


ALL_TOOLS: tuple[types.Tool, ...] = (
    _tool(
        "delegate_task",
        "Delegate a task to another workspace via A2A protocol and WAIT for the response. Use for quick "
        "tasks. The target must be a peer (sibling or parent/child). Use list_peers to find available "
        "targets.",
        {
            "type": "object",
            "properties": {"workspace_id": _TARGET, "task": _TASK},
            "required": ["workspace_id", "task"],
        },
    ),
    _tool(
        "delegate_task_async",
        "Send a task to another workspace with a short timeout (fire-and-forget). Returns immediately "
        "with a task_id — use check_task_status to poll for results.",
        {
            "type": "object",
            "properties": {"workspace_id": _TARGET, "task": _TASK},
            "required": ["workspace_id", "task"],
        },
    ),
    _tool(
        "check_task_status",
        "Check the status of a previously submitted async task. Returns status "
        "(dispatched/success/failed) and result when available.",
        {
            "type": "object",
            "properties": {
                "workspace_id": {"type": "string", "description": "The workspace ID the task was sent to"},
                "task_id": {"type": "string", "description": "The task_id returned by delegate_task_async"},
            },
            "required": ["workspace_id", "task_id"],
        },
    ),
    _tool(
        "list_peers",
        "List all workspaces this agent can communicate with (siblings and parent/children). Returns "
        "name, ID, status, and role for each peer.",
        _NO_ARGS,
    ),
    _tool(
        "get_workspace_info",
        "Get this workspace's own info — ID, name, role, tier, parent, status.",
        _NO_ARGS,
    ),
    _tool(
        SEND_MESSAGE,
        "Send a message directly to the user's canvas chat — pushed instantly via WebSocket. Use this to "
        "acknowledge tasks, send progress updates, or deliver follow-up results.",
        {
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message to send to the user"}},
            "required": ["message"],
        },
    ),
    _tool(
        "commit_memory",
        "Save important information to persistent memory. Scope LOCAL (this workspace only) and TEAM "
        "(parent + siblings) are supported. GLOBAL scope is not available via the MCP bridge.",
        {
            "type": "object",
            "properties": {
                "content": {"type": "string", "description": "The information to remember"},
                "scope": {
                    "type": "string",
                    "enum": ["LOCAL", "TEAM"],
                    "description": "Memory scope (LOCAL or TEAM — GLOBAL is blocked on the MCP bridge)",
                },
            },
            "required": ["content"],
        },
    ),
    _tool(
        "recall_memory",
        "Search persistent memory for previously saved information. Returns all matching memories. "
        "GLOBAL scope is not available via the MCP bridge.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Search query (empty returns all memories)"},
                "scope": {
                    "type": "string",
                    "enum": ["LOCAL", "TEAM", ""],
                    "description": "Filter by scope (empty returns LOCAL + TEAM; GLOBAL is blocked)",
                },
            },
        },
    ),
)


def send_message_allowed(ctx: AppContext) -> bool:
    return ctx.settings.MOLECULE_MCP_ALLOW_SEND_MESSAGE == "true"


def tool_list(ctx: AppContext) -> list[types.Tool]:
    """Every tool, without send_message_to_user unless MOLECULE_MCP_ALLOW_SEND_MESSAGE=true."""
    return [t for t in ALL_TOOLS if t.name != SEND_MESSAGE or send_message_allowed(ctx)]


class ToolError(Exception):
    """A tool refused or failed; the message goes to the client as the JSON-RPC error message."""


# ---------------------------------------------------------------- Go-shaped JSON text

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json(value: Any, *, indent: bool = False, sort_keys: bool = False) -> str:
    """JSON as Go's encoder writes it: UTF-8 kept, `<>&` escaped, MarshalIndent's two-space layout."""
    text = json.dumps(
        value,
        ensure_ascii=False,
        sort_keys=sort_keys,
        indent=2 if indent else None,
        separators=(",", ": ") if indent else (",", ":"),
    )
    for raw, escaped in _HTML_ESCAPES.items():  # these only occur inside strings in JSON text
        text = text.replace(raw, escaped)
    return text


def extract_a2a_text(body: bytes) -> str:
    """Readable text of an A2A reply: `[error] <msg>`, the first text part, else the result (or raw body)."""
    raw = body.decode(errors="replace")
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):  # an agent's reply: nesting depth unbounded
        return raw
    if not isinstance(reply, dict):
        return raw
    err = reply.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return "[error] " + err["message"]
    result = reply.get("result")
    if not isinstance(result, dict):
        return raw
    for parts in _part_lists(result):
        first = parts[0] if parts else None
        if isinstance(first, dict) and isinstance(first.get("text"), str) and first["text"]:
            return str(first["text"])
    return go_json(result, sort_keys=True)


def _part_lists(result: dict[str, Any]) -> list[list[Any]]:
    """artifacts[0].parts, message.parts (the reference's two shapes), then an A2A v0.3 Message's parts."""
    candidates: list[Any] = []
    artifacts = result.get("artifacts")
    if isinstance(artifacts, list) and artifacts and isinstance(artifacts[0], dict):
        candidates.append(artifacts[0].get("parts"))
    message = result.get("message")
    if isinstance(message, dict):
        candidates.append(message.get("parts"))
    candidates.append(result.get("parts"))
    return [p for p in candidates if isinstance(p, list)]


# ---------------------------------------------------------------- tools


@dataclass
class ToolCall:
    ctx: AppContext
    ws_id: str
    args: dict[str, Any]

    def text(self, name: str) -> str:
        value = self.args.get(name)
        return value if isinstance(value, str) else ""

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise ToolError(f"{name} is required")
        return value


async def _peer_target(call: ToolCall) -> tuple[str, str]:
    """(target id, task) of a delegation the hierarchy allows."""
    raw = call.required("workspace_id")
    task = call.required("task")
    target = uuid_or_raw(raw)
    if target == call.ws_id:  # an agent waiting on itself deadlocks (d08f237d)
        raise ToolError("self-delegation not permitted")
    if not await can_communicate(call.ctx.engine, call.ws_id, target):
        raise ToolError(f"workspace {call.ws_id} is not authorised to communicate with {raw}")
    return target, task


async def delegate_task(call: ToolCall) -> str:
    from workspace_server.a2a.proxy import Outcome, proxy_a2a

    target, task = await _peer_target(call)
    message_id = str(uuid.uuid4())
    envelope = {
        "jsonrpc": "2.0",
        "id": str(uuid.uuid4()),
        "method": "message/send",
        "params": {
            "message": {
                "role": "user",
                "parts": [{"kind": "text", "type": "text", "text": task}],
                "messageId": message_id,
            }
        },
    }
    body = json.dumps(envelope, ensure_ascii=False).encode()
    result = await proxy_a2a(call.ctx, target, body, call.ws_id, True, timeout_seconds=SYNC_TIMEOUT_SECONDS)
    if result.outcome is Outcome.QUEUED:  # delivered later; say so rather than invent a reply
        return go_json(result.error if result.error is not None else result.json())
    if result.outcome is Outcome.DELIVERED and result.body:
        return extract_a2a_text(result.body)
    raise ToolError(f"A2A call failed: {result.error_text()}")


async def delegate_task_async(call: ToolCall) -> str:
    from workspace_server.a2a.delegation import delegate
    from workspace_server.a2a.schemas import DelegateRequest

    target, task = await _peer_target(call)
    try:
        _, body = await delegate(call.ctx, call.ws_id, DelegateRequest(target_id=target, task=task))
    except ApiError as exc:
        raise ToolError(str(exc.body.get("error") or "delegation failed")) from None
    task_id = str(body.get("delegation_id", ""))
    return go_json({"task_id": task_id, "status": "dispatched", "target_id": target})


async def check_task_status(call: ToolCall) -> str:
    raw = call.required("workspace_id")
    task_id = call.required("task_id")
    target = uuid_or_raw(raw)
    try:
        async with call.ctx.engine.connect() as conn:
            row = await store.latest_task_row(conn, call.ws_id, target, task_id)
            reply = None
            if row is not None and row.response_body is None and row.status == "completed":
                reply = await store.completed_result_body(conn, call.ws_id, task_id)
    except Exception:
        log.exception("check_task_status failed for %s", call.ws_id)
        raise ToolError("status lookup failed") from None
    if row is None:
        not_found = {
            "task_id": task_id,
            "status": "not_found",
            "note": "task not tracked or not yet dispatched",
        }
        return go_json(not_found)
    out: dict[str, Any] = {"task_id": task_id, "status": row.status, "target_id": raw}
    if row.error_detail:
        out["error"] = row.error_detail
    body = row.response_body if row.response_body is not None else reply
    if body is not None:
        out["result"] = _result_text(body)
    return go_json(out, indent=True, sort_keys=True)


def _result_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return str(body["text"])
    return extract_a2a_text(json.dumps(body).encode())


async def list_peers(call: ToolCall) -> str:
    try:
        async with call.ctx.engine.connect() as conn:
            exists, parent = await parent_of(conn, call.ws_id)
            rows = await peer_rows(conn, call.ws_id, parent) if exists else []
    except Exception:
        log.exception("list_peers failed for %s", call.ws_id)
        raise ToolError("lookup failed") from None
    if not exists:
        raise ToolError("workspace not found")
    if not rows:
        return "No peers found."
    peers = [
        {"id": r.id, "name": r.name, "role": r.role or "", "status": r.status, "tier": r.tier} for r in rows
    ]
    return go_json(peers, indent=True)


async def get_workspace_info(call: ToolCall) -> str:
    try:
        async with call.ctx.engine.connect() as conn:
            row = await get_workspace(conn, call.ws_id)
    except Exception:
        log.exception("get_workspace_info failed for %s", call.ws_id)
        raise ToolError("lookup failed") from None
    if row is None:
        raise ToolError("workspace not found")
    info: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "role": row.role or "",
        "tier": row.tier,
        "status": row.status,
    }
    if row.parent_id:
        info["parent_id"] = row.parent_id
    return go_json(info, indent=True, sort_keys=True)


async def send_message_to_user(call: ToolCall) -> str:
    from workspace_server.activity.schemas import NotifyBody
    from workspace_server.activity.service import notify

    message = call.required("message")
    if not send_message_allowed(call.ctx):
        raise ToolError(
            "send_message_to_user is not enabled on this MCP bridge "
            "(set MOLECULE_MCP_ALLOW_SEND_MESSAGE=true)"
        )
    try:
        await notify(call.ctx.engine, call.ctx.events, call.ws_id, NotifyBody(message=message))
    except ApiError:
        raise ToolError("workspace not found") from None
    return "Message sent."


async def commit_memory(call: ToolCall) -> str:
    try:
        saved = await memories.mcp_commit(call.ctx, call.ws_id, call.text("content"), call.text("scope"))
    except memories.MemoryRefused as exc:
        raise ToolError(str(exc)) from None
    return go_json(saved)


async def recall_memory(call: ToolCall) -> str:
    try:
        found = await memories.mcp_recall(call.ctx, call.ws_id, call.text("query"), call.text("scope"))
    except memories.MemoryRefused as exc:
        raise ToolError(str(exc)) from None
    if not found:
        return "No memories found."
    return go_json(found, indent=True)


HANDLERS: dict[str, Callable[[ToolCall], Awaitable[str]]] = {
    "delegate_task": delegate_task,
    "delegate_task_async": delegate_task_async,
    "check_task_status": check_task_status,
    "list_peers": list_peers,
    "get_workspace_info": get_workspace_info,
    SEND_MESSAGE: send_message_to_user,
    "commit_memory": commit_memory,
    "recall_memory": recall_memory,
}


async def call_tool(ctx: AppContext, ws_id: str, name: str, args: dict[str, Any]) -> str:
    handler = HANDLERS.get(name)
    if handler is None:
        raise ToolError(f"unknown tool: {name}")
    return await handler(ToolCall(ctx, ws_id, args))
