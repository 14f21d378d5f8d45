"""Helpers for the orchestrator/lifecycle tests: a real server (uvicorn on loopback) with a real backend.

`platform_factory(backend="docker"|"process", run_loops=..., **settings)` starts the server with
`PLATFORM_URL` pointing at itself (agents register back over loopback: host-network docker, or local
processes), ADMIN_TOKEN set, and the orphan sweeper off (other suites' containers share the engine).
Tests talk HTTP only; teardown stops the server, then removes every instance and volume it created.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.integration.provisioner_support import message_send
from workspace_server.config import Settings

ADMIN = "orch-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
WAIT_SECONDS = 90.0  # ends a hang; nothing is timed


class Platform:
    def __init__(self, srv: LiveServer, settings: Settings) -> None:
        self.srv = srv
        self.settings = settings
        self.url = srv.url
        self.http = httpx.AsyncClient(base_url=srv.url, headers=AUTH, timeout=30)
        self.ids: list[str] = []

    @property
    def ctx(self) -> Any:
        return self.srv.app.state.ctx

    async def create(self, name: str = "Echo Agent", **body: Any) -> str:
        payload = {"name": name, "runtime": "echo", "tier": 2, **body}
        r = await self.http.post("/workspaces", json=payload)
        assert r.status_code == 201, r.text
        wid = str(r.json()["id"])
        self.ids.append(wid)
        return wid

    async def get(self, wid: str) -> dict[str, Any]:
        r = await self.http.get(f"/workspaces/{wid}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def listed(self, wid: str) -> dict[str, Any]:
        """The list view (it carries last_sample_error)."""
        r = await self.http.get("/workspaces")
        assert r.status_code == 200, r.text
        return next(dict(w) for w in r.json() if w["id"] == wid)

    async def wait_status(self, wid: str, *wanted: str, fail_fast: bool = True) -> dict[str, Any]:
        """Poll until the status is one of `wanted`; an unexpected `failed` ends the wait at once
        (unless `fail_fast` is off: a restart that has not begun yet still shows the old failure)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            view = await self.get(wid)
            if view["status"] in wanted:
                return view
            if view["status"] == "failed" and fail_fast:
                row = await self.listed(wid)
                raise AssertionError(f"{wid} failed: {row['last_sample_error']!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{wid} stayed {view['status']!r}, wanted {wanted}")
            await asyncio.sleep(0.1)

    async def wait_for(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            got = await check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def events(self, wid: str) -> list[tuple[str, dict[str, Any]]]:
        """(event type, payload), oldest first."""
        r = await self.http.get(f"/events/{wid}")
        assert r.status_code == 200, r.text
        rows = [(e["event_type"], e.get("payload") or {}) for e in r.json()]
        return list(reversed(rows))

    async def event_types(self, wid: str) -> list[str]:
        return [t for t, _ in await self.events(wid)]

    async def a2a(self, wid: str, text: str) -> httpx.Response:
        return await self.http.post(f"/workspaces/{wid}/a2a", json=message_send(text))

    async def close(self) -> None:
        await self.http.aclose()
        await asyncio.to_thread(self.srv.stop)
        await remove_instances(self.settings, self.ids)


async def agent_reply(url: str, text: str) -> str:
    """POST message/send straight to the agent's URL (not through the platform)."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(url, json=message_send(text))
    assert r.status_code == 200, r.text
    return str(r.json()["result"]["parts"][0]["text"])


async def remove_instances(settings: Settings, ids: list[str]) -> None:
    """Teardown: no container, agent process or volume of these workspaces is left behind."""
    backend: Any
    if settings.WORKSPACE_BACKEND == "docker":
        from workspace_server.provisioner.docker import DockerBackend

        backend = DockerBackend(settings)
    elif settings.WORKSPACE_BACKEND == "swarm":
        from workspace_server.provisioner.swarm import SwarmBackend

        backend = SwarmBackend(settings)
    elif settings.WORKSPACE_BACKEND == "process":
        from workspace_server.provisioner.process import ProcessBackend

        backend = ProcessBackend(settings)
    else:
        return
    try:
        for wid in ids:
            try:
                await backend.stop(wid)
                await backend.remove_volumes(wid, workspace=True)
            except Exception as exc:  # keep cleaning the others
                print(f"cleanup of {wid} failed: {exc}")
    finally:
        await backend.close()


PlatformFactory = Callable[..., Any]


@pytest.fixture(name="platform_factory")
async def platform_factory_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[PlatformFactory]:
    """Import `platform_factory_fixture` into a test module to use the `platform_factory` fixture."""
    made: list[Platform] = []

    async def make(
        backend: str = "docker", run_loops: bool = False, bridged: bool = False, **overrides: Any
    ) -> Platform:
        """`bridged`: agents on a bridge network call the server on the engine host (all addresses,
        `host.docker.internal`), as a server outside the agents' network is called."""
        base: dict[str, Any] = {
            "WORKSPACE_BACKEND": backend,
            "DOCKER_NETWORK_MODE": "host",
            "ADMIN_TOKEN": ADMIN,
            "ORPHAN_SWEEP_INTERVAL": 0,
            "HEALTH_SWEEP_INTERVAL": 0.5,
            "LEADER_LEASE_RENEW_SECONDS": 0.5,
        }
        base.update(overrides)
        settings = make_settings(db_url, tmp_path, **base)
        srv = LiveServer(settings, run_loops=run_loops, host="0.0.0.0" if bridged else "127.0.0.1")
        # the agents must reach this very server: point PLATFORM_URL at the port it is about to bind
        own = f"http://host.docker.internal:{srv.port}" if bridged else srv.url
        settings.PLATFORM_URL, settings.PORT = own, srv.port
        await asyncio.to_thread(srv.start)
        platform = Platform(srv, settings)
        made.append(platform)
        return platform

    yield make
    for p in reversed(made):
        await p.close()


def write_template(configs: Path, name: str, config: dict[str, Any]) -> Path:
    """A template dir under CONFIGS_DIR holding `config.yaml` (JSON is valid YAML)."""
    d = configs / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    return d
