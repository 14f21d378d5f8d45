"""`GET /workspaces/:id/terminal` on the process backend: a pty shell in the agent's workspace dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.terminal_support import (
    LiveFactory,
    Rows,
    check_handshake_rules,
    check_shell_session,
    dev_server,
    refused,
    start_agent,
    tracked_backend,
)
from workspace_server.config import Settings
from workspace_server.provisioner import StartSpec
from workspace_server.provisioner.process import ProcessBackend


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ProcessBackend]:
    async with tracked_backend(ProcessBackend(Settings(DATA_DIR=tmp_path / "data"))) as b:
        yield b


async def test_terminal_on_the_process_backend(
    live_server_factory: LiveFactory, db_url: str, backend: ProcessBackend
) -> None:
    srv = dev_server(live_server_factory, backend)
    rows = Rows(db_url)
    ws_id = await rows.workspace()
    assert await refused(srv, ws_id) == (404, {"error": "container not running"})
    assert await refused(srv, "not-a-uuid") == (404, {"error": "container not running"})

    spec = StartSpec(workspace_id=ws_id, image="ignored", runtime="echo", platform_url="http://127.0.0.1:9")
    await start_agent(backend, spec)

    await check_shell_session(srv, ws_id)
    await check_handshake_rules(srv, rows, ws_id)
