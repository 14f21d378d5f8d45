"""A node's `channels:` block of org.yaml (spec 06 §3.5 step 8), applied through the channels service.

Each entry's `$VAR` / `${VAR}` are expanded from the org `.env`, the node `.env`, then the server's
environment. What cannot be applied becomes a skip record `{"workspace","type","reason"}`: `empty type`,
`unknown adapter`, `missing env: [A B]` (a name unresolved or expanded to empty, Go's `%v` of a slice), or
the channels service's own validation message. What can is validated, stored encrypted (the reference
stored org-imported configs in clear: a spec 06 BUG) and upserted on (workspace, type): a second entry of
the same type in one node updates the first, as the reference's upsert did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workspace_server.channels import adapters
from workspace_server.channels import service as channels
from workspace_server.common.errors import ApiError
from workspace_server.orgs.models import Channel, Node
from workspace_server.orgs.sources import VAR_PATTERN, expand_vars

if TYPE_CHECKING:
    from workspace_server.context import AppContext

DUPLICATE = 409  # channels.create_channel's answer when the workspace already has a channel of that type


def missing_vars(value: str, envs: tuple[Mapping[str, str], ...]) -> list[str]:
    """The names in `value` no env resolves to a non-empty value, in order of first use."""
    out: list[str] = []
    for m in VAR_PATTERN.finditer(value):
        name = m.group(1) or m.group(2)
        if not any(env.get(name) for env in envs) and name not in out:
            out.append(name)
    return out


async def apply(ctx: AppContext, ws_id: str, node: Node, *envs: Mapping[str, str]) -> dict[str, Any]:
    """`channels` (the types applied) and `channels_skipped` for the node's result entry."""
    applied: list[str] = []
    skipped: list[dict[str, str]] = []
    for ch in node.channels:
        reason = await _apply_one(ctx, ws_id, ch, envs)
        if reason is None:
            applied.append(ch.type.strip())
        else:
            skipped.append({"reason": reason, "type": ch.type, "workspace": node.name})
    out: dict[str, Any] = {}
    if applied:
        out["channels"] = applied
    if skipped:
        out["channels_skipped"] = skipped
    return out


async def _apply_one(
    ctx: AppContext, ws_id: str, ch: Channel, envs: tuple[Mapping[str, str], ...]
) -> str | None:
    """None when applied, else the skip reason."""
    channel_type = ch.type.strip()
    if not channel_type:
        return "empty type"
    if channel_type not in adapters.ADAPTERS:
        return "unknown adapter"
    missing: list[str] = []
    for value in ch.config.values():
        missing += [n for n in missing_vars(value, envs) if n not in missing]
    if missing:
        return f"missing env: [{' '.join(missing)}]"
    config = {key: expand_vars(value, *(dict(e) for e in envs)) for key, value in ch.config.items()}
    body = {
        "channel_type": channel_type,
        "config": config,
        "allowed_users": ch.allowed_users,
        "enabled": ch.enabled,
    }
    try:
        await channels.create_channel(ctx, ws_id, body)
    except ApiError as exc:
        if exc.status != DUPLICATE:
            return str(exc.body.get("error") or "invalid channel config")
        return await _update_existing(ctx, ws_id, channel_type, body)
    return None


async def _update_existing(
    ctx: AppContext, ws_id: str, channel_type: str, body: dict[str, Any]
) -> str | None:
    for row in await channels.list_channels(ctx, ws_id):
        if row["channel_type"] == channel_type:
            try:
                await channels.update_channel(ctx, ws_id, str(row["id"]), body)
            except ApiError as exc:
                return str(exc.body.get("error") or "invalid channel config")
            return None
    return "failed to create channel"
