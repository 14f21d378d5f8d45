"""Fixtures of the fault tests: private services (tests/faults/services.py) and server subprocesses.

Each private service is stopped and removed at teardown, whatever the test did to it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, need
from tests.faults.services import (
    AGENT_IMAGE,
    IS_ROOT,
    Dockerd,
    PgCluster,
    RedisServer,
    ServerProcess,
    pg_bindir,
)

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    need("Postgres binaries (initdb, pg_ctl)", pg_bindir() is not None)
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    need("the redis-server binary", shutil.which("redis-server") is not None)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


def _main_engine_has(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    res = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30)
    return res.returncode == 0


@pytest.fixture(scope="module")
def private_dockerd() -> Iterator[Dockerd]:
    """A Docker engine of this module's own, holding the agent image (copied from the main engine)."""
    need("root, to run a private dockerd", IS_ROOT)
    if shutil.which("dockerd") is None or not _main_engine_has(AGENT_IMAGE):
        if IN_CI:
            pytest.fail(f"dockerd and {AGENT_IMAGE} in the main engine are required in CI")
        pytest.skip(f"dockerd or {AGENT_IMAGE} (make runtime-image) missing")
    engine = Dockerd().start()
    try:
        engine.load_image()
        yield engine
    finally:
        engine.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """`server_factory(DATABASE_URL=..., ...)` → a started `workspace-server serve` subprocess."""
    made: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        workdir = tmp_path / f"server-{len(made)}"
        workdir.mkdir()
        base = {
            "DATABASE_URL": f"sqlite:///{workdir}/ws.db",
            "REDIS_URL": "",
            "WORKSPACE_BACKEND": "none",
            "DATA_DIR": str(workdir / "data"),
            "CONFIGS_DIR": str(workdir / "configs"),
            "MOLECULE_ENV": "development",
            "ADMIN_TOKEN": "",
        }
        srv = ServerProcess({**base, **env}, workdir)
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        srv.stop()
