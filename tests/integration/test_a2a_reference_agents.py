"""Two reference agents (`python -m molecule_agent`, real subprocesses) talk through a real server's proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import AgentStarter, LiveServer
from tests.integration.a2a_support import wait_for


def text_of(reply: Any) -> str:
    return str(reply["result"]["parts"][0]["text"])


async def test_two_reference_agents_talk_through_the_proxy(
    live_server_factory: Callable[..., LiveServer], reference_agents: AgentStarter
) -> None:
    srv = live_server_factory(MOLECULE_ENV="development")
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        ids = []
        for name in ("Echo Agent", "SEO Agent"):
            r = await c.post("/workspaces", json={"name": name, "tier": 1})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        a, b = ids
        dirs = [reference_agents(a, srv.url, "Echo Agent"), reference_agents(b, srv.url, "SEO Agent")]

        async def both_online() -> bool:
            got = [(await c.get(f"/workspaces/{w}")).json() for w in (a, b)]
            return all(w["status"] == "online" for w in got) and all(
                (d / ".auth_token").exists() for d in dirs
            )

        await wait_for(both_online, "both agents online")
        tok_a = (dirs[0] / ".auth_token").read_text().strip()
        tok_b = (dirs[1] / ".auth_token").read_text().strip()

        # A -> B and B -> A, each with its own bearer
        for caller, token, target, text in ((a, tok_a, b, "hi B"), (b, tok_b, a, "hi A")):
            r = await c.post(
                f"/workspaces/{target}/a2a",
                json={
                    "method": "message/send",
                    "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}},
                },
                headers={"X-Workspace-ID": caller, "Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
            reply = r.json()
            assert reply["jsonrpc"] == "2.0" and text_of(reply) == text
            assert r.headers["content-type"] == "application/json"

            async def logged(target: str = target, caller: str = caller) -> Any:
                rows = (
                    await c.get(
                        f"/workspaces/{target}/activity?type=a2a_receive",
                        headers={"Authorization": f"Bearer {tok_a if target == a else tok_b}"},
                    )
                ).json()
                return [x for x in rows if x["source_id"] == caller] or None

            (row,) = await wait_for(logged, "a2a_receive row on the target")
            assert row["status"] == "ok" and row["method"] == "message/send"
            assert row["request_body"]["params"]["message"]["parts"][0]["text"] == text
            assert text_of(row["response_body"]) == text
            assert isinstance(row["duration_ms"], int)
            assert (await c.get(f"/workspaces/{caller}")).json()["last_outbound_at"] is not None

        # denials: another workspace's token, a forged system caller, uncle -> nephew
        r = await c.post(
            f"/workspaces/{b}/a2a",
            json={"method": "message/send", "params": {}},
            headers={"X-Workspace-ID": a, "Authorization": f"Bearer {tok_b}"},
        )
        assert (r.status_code, r.json()) == (401, {"error": "invalid caller auth token"})
        r = await c.post(
            f"/workspaces/{b}/a2a", json={"method": "message/send"}, headers={"X-Workspace-ID": "system:cron"}
        )
        assert (r.status_code, r.json()) == (403, {"error": "invalid caller ID"})
        r = await c.post(
            "/workspaces",
            json={"name": "Nephew", "tier": 1, "parent_id": b},
            headers={"Authorization": f"Bearer {tok_b}"},
        )
        assert r.status_code == 201, r.text
        nephew = r.json()["id"]
        r = await c.post(
            f"/workspaces/{nephew}/a2a",
            json={"method": "message/send", "params": {}},
            headers={"X-Workspace-ID": a, "Authorization": f"Bearer {tok_a}"},
        )
        assert (r.status_code, r.json()) == (
            403,
            {"error": "access denied: workspaces cannot communicate per hierarchy rules"},
        )
