"""The reference agent's A2A surface, over real HTTP on a loopback port."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from molecule_agent.a2a import Agent, serve
from molecule_agent.config import AgentConfig


@pytest.fixture
def agent_url(tmp_path: Path) -> Iterator[str]:
    cfg = AgentConfig(
        workspace_id="00000000-0000-0000-0000-00000000000a",
        platform_url="http://127.0.0.1:9",
        config_dir=tmp_path,
        port=0,
        advertised_url="http://localhost:0",
        heartbeat_interval=30,
        name="Echo Agent",
        description="",
        version="1.0.0",
        skills=[{"id": "echo", "name": "Echo", "description": "", "tags": []}],
    )
    server = serve(Agent(cfg, None), host="127.0.0.1", port=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


def test_message_send_echoes_text_parts(agent_url: str) -> None:
    req = {
        "jsonrpc": "2.0",
        "id": "r1",
        "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"type": "text", "text": "hi"}]}},
    }
    status, raw = post(agent_url + "/", json.dumps(req).encode())
    assert status == 200
    assert b": " not in raw  # compact JSON
    body = json.loads(raw)
    assert body["id"] == "r1"
    assert body["result"]["role"] == "agent"
    assert body["result"]["kind"] == "message"
    assert body["result"]["parts"] == [{"kind": "text", "text": "hi"}]


def test_unknown_method_is_32601_with_http_200(agent_url: str) -> None:
    status, raw = post(agent_url + "/", b'{"jsonrpc":"2.0","id":7,"method":"tasks/cancel"}')
    assert status == 200
    assert json.loads(raw) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32601, "message": "Method not found"},
    }


def test_malformed_json_is_parse_error(agent_url: str) -> None:
    status, raw = post(agent_url + "/", b"{not json")
    assert status == 200
    assert json.loads(raw)["error"]["code"] == -32700


def test_agent_card_served(agent_url: str) -> None:
    with urllib.request.urlopen(agent_url + "/.well-known/agent-card.json", timeout=5) as resp:
        card = json.loads(resp.read())
    assert card["name"] == "Echo Agent"
    assert card["skills"][0]["id"] == "echo"
