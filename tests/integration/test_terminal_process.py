"""`GET /workspaces/:id/terminal` on the process backend: a pty shell in the agent's workspace dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.provisioner_support import wait_for_reply
from tests.integration.test_terminal_support import (
    LiveFactory,
    Rows,
    check_handshake_rules,
    check_shell_session,
    refused,
)
from workspace_server.config import Settings
from workspace_server.provisioner import StartSpec
from workspace_server.provisioner.process import ProcessBackend


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ProcessBackend]:
    b = ProcessBackend(Settings(DATA_DIR=tmp_path / "data"))
    started: list[str] = []
    b.started = started  # type: ignore[attr-defined]
    yield b
    for ws_id in started:
        await b.stop(ws_id)
        await b.remove_volumes(ws_id, workspace=True)
    await b.close()


async def test_terminal_on_the_process_backend(
    live_server_factory: LiveFactory, db_url: str, backend: ProcessBackend
) -> None:
    srv = live_server_factory(MOLECULE_ENV="development")
    srv.app.state.ctx.extras["backend"] = backend
    rows = Rows(db_url)
    ws_id = await rows.workspace()
    assert await refused(srv, ws_id) == (404, {"error": "container not running"})
    assert await refused(srv, "not-a-uuid") == (404, {"error": "container not running"})

    backend.started.append(ws_id)  # type: ignore[attr-defined]
    spec = StartSpec(workspace_id=ws_id, image="ignored", runtime="echo", platform_url="http://127.0.0.1:9")
    await wait_for_reply((await backend.start(spec)).url)

    await check_shell_session(srv, ws_id)
    await check_handshake_rules(srv, rows, ws_id)
