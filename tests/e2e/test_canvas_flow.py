"""The reference canvas's flow end to end (issue 13 §3), over HTTP and WebSocket, the way the canvas does.

The combined tenant shape in production mode: the server serves the canvas itself (`CANVAS_PROXY_URL`, a
stub Next.js on loopback) and the API from one origin; the page's calls carry that origin (`Origin`,
`Referer`), admin calls add the canvas's `NEXT_PUBLIC_ADMIN_TOKEN` bearer, and the browser's WebSockets
(events, terminal) carry only the origin. Agents are real: the process backend starts the reference agent
(`runtime: echo`) for every node the org import creates. On SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.channels_support import FakeProviders
from tests.integration.orchestrator_support import (
    ADMIN,
    PlatformFactory,
    platform_factory_fixture,  # noqa: F401 - registers the platform_factory fixture
)
from tests.integration.provisioner_support import message_send
from tests.integration.stub_http import StubHandler, StubServer

DEADLINE = 90.0  # ends a hang; nothing is timed
ORG: dict[str, Any] = {
    "name": "Canvas Team",
    "defaults": {"runtime": "echo", "tier": 2, "initial_prompt": "hello team"},
    "workspaces": [
        {"name": "PM", "canvas": {"x": 40, "y": 60}, "children": [{"name": "Dev"}, {"name": "QA"}]}
    ],
}


class CanvasStub(StubServer):
    """The canvas's Next.js server: any GET is the app's HTML."""

    def __init__(self) -> None:
        class Handler(StubHandler):
            def do_GET(self) -> None:
                self.respond(200, b"<html>molecule canvas</html>", "text/html; charset=utf-8")

        super().__init__(Handler)


async def next_events(sock: ClientConnection, done: Any, seen: list[dict[str, Any]]) -> None:
    """Read `/ws` frames into `seen` until `done(seen)`."""
    deadline = time.monotonic() + DEADLINE
    while not done(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"events never arrived; got {[(e['event'], e['workspace_id']) for e in seen]}"
        seen.append(json.loads(await asyncio.wait_for(sock.recv(), left)))


def of(seen: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {e["workspace_id"]: e["payload"] for e in seen if e["event"] == kind}


async def test_canvas_flow(platform_factory: PlatformFactory, tmp_path: Path) -> None:
    canvas = CanvasStub()
    (tmp_path / "configs").mkdir(exist_ok=True)
    team = tmp_path / "org-templates" / "canvas-team"
    team.mkdir(parents=True)
    (team / "org.yaml").write_text(yaml.safe_dump(ORG), encoding="utf-8")
    canvas_port = canvas.url.rsplit(":", 1)[1]
    fake = await FakeProviders().start()
    fake_port = fake.base.rsplit(":", 1)[1]
    try:
        p = await platform_factory(
            "process",
            CANVAS_PROXY_URL=canvas.url,
            EGRESS_ALLOW_CIDRS=f"127.0.0.1/32:{canvas_port},127.0.0.1/32:{fake_port}",
            **fake.settings(),
        )
        origin = p.url
        # the operator lists the tenant's own origin (its WebSocket Origin checks read CORS_ORIGINS)
        p.settings.CORS_ORIGINS = f"http://localhost:3000,{origin}"
        await run_flow(p, origin, fake)
    finally:
        canvas.close()
        await fake.close()


async def run_flow(p: Any, origin: str, fake: FakeProviders) -> None:
    page = {"Origin": origin, "Referer": origin + "/"}
    admin = {**page, "Authorization": f"Bearer {ADMIN}"}
    ws_base = origin.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=origin, timeout=30) as browser:
        # the page itself comes through the canvas proxy, with the UI's CSP
        r = await browser.get("/", headers={"Accept": "text/html", "Cookie": "s=1"})
        assert (r.status_code, r.text) == (200, "<html>molecule canvas</html>")
        assert "unsafe-inline" in r.headers["content-security-policy"]

        async with connect(ws_base + "/ws", additional_headers={"Origin": origin}) as events:
            # create an org from a template, as the template palette does
            r = await browser.get("/org/templates", headers=admin)
            assert [t["dir"] for t in r.json()] == ["canvas-team"], r.text
            r = await browser.post("/org/import", json={"dir": "canvas-team"}, headers=admin)
            assert r.status_code == 201, r.text
            ids = {w["name"]: w["id"] for w in r.json()["workspaces"]}
            p.ids.extend(ids.values())

            # watch the events: every node appears nested in its parent, then comes online
            seen: list[dict[str, Any]] = []
            await next_events(events, lambda s: set(of(s, "WORKSPACE_ONLINE")) >= set(ids.values()), seen)
            prov = of(seen, "WORKSPACE_PROVISIONING")
            assert prov[ids["PM"]] == {"name": "PM", "tier": 2, "runtime": "echo", "x": 40, "y": 60}
            assert prov[ids["Dev"]] == {
                "name": "Dev",
                "tier": 2,
                "runtime": "echo",
                "x": 16,
                "y": 130,
                "parent_id": ids["PM"],
            }
            assert prov[ids["QA"]]["parent_id"] == ids["PM"] and prov[ids["QA"]]["x"] == 16 + 240 + 14
            listed = {w["id"]: w for w in (await browser.get("/workspaces", headers=admin)).json()}
            assert listed[ids["Dev"]]["parent_id"] == ids["PM"] and listed[ids["Dev"]]["status"] == "online"

            # open the chat and send a message as the canvas does (no X-Workspace-ID, page credentials)
            dev = ids["Dev"]
            r = await browser.get(f"/workspaces/{dev}/activity", params={"type": "a2a_receive"}, headers=page)
            assert r.status_code == 200, r.text
            r = await browser.post(
                f"/workspaces/{dev}/a2a", json=message_send("hi from canvas"), headers=page
            )
            assert r.status_code == 200, r.text
            assert "hi from canvas" in json.dumps(r.json()["result"])
            # and receive it on the socket, as the chat panel does
            await next_events(events, lambda s: dev in of(s, "A2A_RESPONSE"), seen)
            assert "hi from canvas" in json.dumps(of(seen, "A2A_RESPONSE")[dev]["response_body"])

        # the terminal tab: a shell in the workspace, authenticated by the page's origin
        async with connect(
            f"{ws_base}/workspaces/{dev}/terminal", additional_headers={"Origin": origin}
        ) as term:
            await term.send("echo canvas-$((6*7))\n")
            out, deadline = b"", time.monotonic() + DEADLINE
            while b"canvas-42" not in out:
                frame = await asyncio.wait_for(term.recv(), max(deadline - time.monotonic(), 0.1))
                out += frame if isinstance(frame, bytes) else frame.encode()

        # the files tab: list, read the config the org import wrote, save a file, read it back
        r = await browser.get(f"/workspaces/{dev}/files", headers=page)
        assert r.status_code == 200 and "config.yaml" in {f["path"] for f in r.json()}, r.text
        r = await browser.get(f"/workspaces/{dev}/files/config.yaml", headers=page)
        assert yaml.safe_load(r.json()["content"])["initial_prompt"] == "hello team\n"
        r = await browser.put(
            f"/workspaces/{dev}/files/notes.md", json={"content": "# notes\n"}, headers=page
        )
        assert r.status_code == 200, r.text
        r = await browser.get(f"/workspaces/{dev}/files/notes.md", headers=page)
        assert r.json()["content"] == "# notes\n"

        # the tokens tab with no node selected asks for /workspaces/global/tokens: a clean refusal the tab
        # shows as its error line above "No active tokens" (docs/decisions.md "Canvas")
        for method in ("GET", "POST"):
            r = await browser.request(method, "/workspaces/global/tokens", headers=admin)
            assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})
            r = await browser.request(method, "/workspaces/global/tokens", headers=page)
            assert (r.status_code, r.json()) == (400, {"error": "invalid workspace ID"})

        # the channels tab: the adapters, then a Slack channel set up, listed masked, tested, sent on,
        # disabled and removed; the provider is a local fake of Slack's Web API
        r = await browser.get("/channels/adapters", headers=page)
        assert [a["type"] for a in r.json()] == ["discord", "lark", "slack", "telegram"], r.text
        base = f"/workspaces/{dev}/channels"
        slack = {"bot_token": "xoxb-1234567890-secret", "channel_id": "C1"}
        r = await browser.post(base, json={"channel_type": "slack", "config": slack}, headers=admin)
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        (listed,) = (await browser.get(base, headers=admin)).json()
        assert listed["config"]["bot_token"] == "xoxb...cret"
        r = await browser.post(f"{base}/{cid}/test", headers=admin)
        assert r.json() == {"status": "ok", "message": "test message sent"}, r.text
        r = await browser.post(f"{base}/{cid}/send", json={"text": "from the canvas"}, headers=admin)
        assert r.json() == {"status": "sent"}, r.text
        assert [c["text"] for c in fake.of("chat.postMessage")][-1] == "from the canvas"
        r = await browser.patch(f"{base}/{cid}", json={"enabled": False}, headers=admin)
        assert r.json() == {"status": "updated"}
        r = await browser.delete(f"{base}/{cid}", headers=admin)
        assert r.json() == {"status": "deleted"}
        assert (await browser.get(base, headers=admin)).json() == []
