"""The reference agent's registration: retried quickly, and sent only once its A2A socket listens.

A fake platform on a loopback port records what the agent sends; nothing here asserts on time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from molecule_agent.config import AgentConfig
from molecule_agent.platform import PUSH_GAP, REGISTER_RETRY_MAX, PlatformClient
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
WS_ID = "00000000-0000-0000-0000-0000000000b1"


class FakePlatform:
    """Answers /registry/* with `answer(path, body) -> status`; records (path, body) of every call."""

    def __init__(self, answer: Callable[[str, dict[str, Any]], int]) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.got_heartbeat = threading.Event()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                platform.calls.append((self.path, body))
                status = answer(self.path, body)
                data = json.dumps({"status": "ok"} if status == 200 else {"error": "busy"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if self.path == "/registry/heartbeat":
                    platform.got_heartbeat.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platforms() -> Iterator[list[FakePlatform]]:
    made: list[FakePlatform] = []
    yield made
    for p in made:
        p.close()


class RecordingStop(threading.Event):
    """The agent's stop event: records each back-off it is asked to wait, and does not wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.waits.append(timeout)
        return super().wait(0)


def agent_config(platform_url: str, config_dir: Path) -> AgentConfig:
    return AgentConfig(
        workspace_id=WS_ID,
        platform_url=platform_url,
        config_dir=config_dir,
        port=0,
        advertised_url="http://localhost:1",
        heartbeat_interval=30,
        name="Retry Agent",
        description="",
        version="1.0.0",
    )


def test_register_retries_fast_then_backs_off_and_heartbeats_once_registered(
    platforms: list[FakePlatform], tmp_path: Path
) -> None:
    failures = {"left": 6}

    def answer(path: str, _body: dict[str, Any]) -> int:
        if path == "/registry/register" and failures["left"] > 0:
            failures["left"] -= 1
            return 503
        return 200

    fake = FakePlatform(answer)
    platforms.append(fake)
    client = PlatformClient(agent_config(fake.url, tmp_path))
    stop = RecordingStop()

    def end_after_heartbeat() -> None:
        fake.got_heartbeat.wait(60)
        stop.set()
        client._wake.set()  # let the heartbeat loop notice the stop now

    threading.Thread(target=end_after_heartbeat, daemon=True).start()
    client.run_forever(stop)

    assert fake.paths()[:8] == ["/registry/register"] * 7 + ["/registry/heartbeat"]
    assert fake.calls[0][1]["id"] == WS_ID and fake.calls[0][1]["agent_card"]["name"] == "Retry Agent"
    # 0.2 s first, doubling, capped: a platform that is up is retried at once, a down one is not hammered
    assert stop.waits[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert REGISTER_RETRY_MAX == 15.0


def test_first_register_goes_out_with_the_a2a_socket_already_listening(
    platforms: list[FakePlatform], tmp_path: Path
) -> None:
    """A platform that calls the agent back while handling its register gets an answer."""
    port = free_port()
    callbacks: list[int] = []

    def answer(path: str, _body: dict[str, Any]) -> int:
        if path == "/registry/register":
            card_url = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
            with urllib.request.urlopen(card_url, timeout=30) as resp:
                callbacks.append(resp.status)
        return 200

    fake = FakePlatform(answer)
    platforms.append(fake)
    (tmp_path / "config.yaml").write_text("name: Callback Agent\n", encoding="utf-8")
    env = {
        **os.environ,
        "WORKSPACE_ID": WS_ID,
        "PLATFORM_URL": fake.url,
        "A2A_PORT": str(port),
        "A2A_HOST": "127.0.0.1",
        "WORKSPACE_CONFIG_PATH": str(tmp_path),
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = subprocess.Popen([sys.executable, "-m", "molecule_agent"], env=env, stderr=subprocess.DEVNULL)
    try:
        assert fake.got_heartbeat.wait(60), "the agent never heartbeated"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert fake.paths()[:2] == ["/registry/register", "/registry/heartbeat"]  # registered on the first try
    assert callbacks == [200]
    assert fake.calls[0][1]["agent_card"]["name"] == "Callback Agent"


def test_task_changes_push_heartbeats_throttled_and_the_last_state_arrives(
    platforms: list[FakePlatform], tmp_path: Path
) -> None:
    """A burst of task starts and ends is pushed as a few heartbeats (at most one per PUSH_GAP), not one
    per change, and the state after the burst (idle) still reaches the platform."""
    fake = FakePlatform(lambda _path, _body: 200)
    platforms.append(fake)
    client = PlatformClient(agent_config(fake.url, tmp_path))
    stop = threading.Event()
    runner = threading.Thread(target=client.run_forever, args=(stop,), daemon=True)
    runner.start()
    assert fake.got_heartbeat.wait(30)  # registered and sent its first heartbeat

    def beats() -> list[dict[str, Any]]:
        return [body for path, body in list(fake.calls) if path == "/registry/heartbeat"]

    before = len(beats())
    started = time.monotonic()
    for i in range(200):  # spread over >= 0.4 s: unthrottled, each change would be its own heartbeat
        client.task_started(f"task {i}")
        client.task_finished(ok=True)
        time.sleep(0.002)
    burst = time.monotonic() - started
    deadline = time.monotonic() + 30  # deadlock guard, not a timing assertion
    while time.monotonic() < deadline and not (len(beats()) > before and beats()[-1]["current_task"] == ""):
        time.sleep(0.01)
    stop.set()
    client._wake.set()
    runner.join(30)

    pushed = beats()[before:]
    assert pushed and pushed[-1]["active_tasks"] == 0 and pushed[-1]["current_task"] == ""
    assert len(pushed) <= 2 + burst / PUSH_GAP  # 400 changes, a handful of heartbeats
    assert len(pushed) < 50
