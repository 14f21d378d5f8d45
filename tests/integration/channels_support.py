"""A local fake of the four providers' HTTP APIs (no tests of its own), on 127.0.0.1, for the channel
tests: the SDKs are pointed at it through the base-URL settings.

- Slack: `/slack/api/<method>` (Web API; `ok:false` when `slack_error` is set), `/slack/hooks/<path>`;
- Telegram: `/tg/bot<token>/<method>`; `getUpdates` hands out the queued `updates` once;
- Discord: `/discord/api/webhooks/<id>/<token>` (204);
- Lark: `/lark/open-apis/bot/v2/hook/<id>` (`{"code":0}`).
Every call is recorded in `calls` as (path, parsed body).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

TELEGRAM_TOKEN = "123456:" + "A" * 35


class FakeProviders:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.slack_error = ""
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> FakeProviders:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def settings(self) -> dict[str, Any]:
        return {
            "SLACK_API_BASE_URL": f"{self.base}/slack/api/",
            "SLACK_WEBHOOK_BASE_URL": f"{self.base}/slack/hooks/",
            "TELEGRAM_API_BASE_URL": f"{self.base}/tg/bot",
            "DISCORD_API_BASE_URL": f"{self.base}/discord/api",
            "LARK_FEISHU_BASE_URL": f"{self.base}/lark",
            "LARK_LARKSUITE_BASE_URL": f"{self.base}/lark",
            "CHANNEL_POLL_TIMEOUT_SECONDS": 1,
        }

    def of(self, fragment: str) -> list[Any]:
        return [body for path, body in self.calls if fragment in path]

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            return json.loads(raw or b"null")
        if "form" in ctype:
            return dict(parse_qsl(raw.decode()))
        if "multipart" in ctype:
            return raw.decode(errors="replace")
        return raw.decode(errors="replace")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await self._body(request)
        self.calls.append((path, body))
        if path.startswith("/slack/api/"):
            if self.slack_error:
                return web.json_response({"ok": False, "error": self.slack_error})
            if path.endswith("conversations.history"):
                return web.json_response({"ok": True, "messages": SLACK_HISTORY})
            return web.json_response({"ok": True, "ts": "1.2", "channel": "C1"})
        if path.startswith("/slack/hooks/"):
            return web.Response(text="ok")
        if path.startswith("/discord/"):
            return web.Response(status=204)
        if path.startswith("/lark/"):
            return web.json_response({"code": 0, "msg": "ok"})
        if path.startswith("/tg/bot"):
            return await self._telegram(path.rsplit("/", 1)[-1], body)
        return web.Response(status=404)

    async def _telegram(self, method: str, body: Any) -> web.Response:
        me = {
            "id": 123456,
            "is_bot": True,
            "first_name": "Bot",
            "username": "test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        if method == "getMe":
            return web.json_response({"ok": True, "result": me})
        if method == "getUpdates":
            if not self.updates:
                await asyncio.sleep(0.2)
            out, self.updates = self.updates, []
            return web.json_response({"ok": True, "result": out})
        if method == "sendMessage":
            msg = {
                "message_id": 99,
                "date": 0,
                "chat": {"id": int(body["chat_id"]), "type": "private"},
                "text": body.get("text", ""),
            }
            return web.json_response({"ok": True, "result": msg})
        return web.json_response({"ok": True, "result": True})


def tg_update(update_id: int, chat_id: int, text: str, user: str = "alice") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": 42, "is_bot": False, "first_name": "Alice", "username": user},
            "text": text,
        },
    }


SLACK_HISTORY = [  # newest first, as Slack answers
    {"type": "message", "user": "U2", "text": "ship it", "ts": "3"},
    {"type": "message", "bot_id": "B1", "text": "bot noise", "ts": "2"},
    {"type": "message", "username": "Deploy Bot", "bot_id": "B2", "text": "deployed v2", "ts": "1.5"},
    {"type": "message", "user": "U1", "text": "x" * 300, "ts": "1"},
]
