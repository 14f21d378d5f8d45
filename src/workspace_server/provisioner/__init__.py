"""Workspace backends: docker (containers), process (local subprocesses), or none.

`make_backend(settings)` picks one at start-up from `WORKSPACE_BACKEND`:
- `docker`: the Docker engine; None (no backend) when it does not answer `ping`, as in the reference;
- `swarm`: one Swarm service per workspace; None when the engine is not an active swarm manager;
- `process`: local subprocesses;
- `auto`: docker when the engine answers, else process — outside production only (DECIDE: the process
  backend isolates nothing, so production never falls back to it silently; set `process` explicitly);
- `none`: no backend (workspaces are created `failed` by the orchestrator).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio.to_thread

from workspace_server.config import Settings
from workspace_server.provisioner.base import (
    Backend,
    BackendError,
    ErrNoBackend,
    ExecResult,
    ExecSession,
    ImageNotFound,
    Instance,
    InstanceNotRunning,
    PullProgress,
    Started,
    StartSpec,
)
from workspace_server.provisioner.runtimes import RuntimeImages, RuntimeImagesError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the concrete backends stay lazy imports at run time (the docker SDK loads for one only)
    from workspace_server.provisioner.docker import DockerBackend
    from workspace_server.provisioner.process import ProcessBackend
    from workspace_server.provisioner.swarm import SwarmBackend

    def _conforms(settings: Settings) -> tuple[Backend, Backend, Backend]:
        """Never called: mypy checks here that each backend class satisfies the Backend protocol (the
        run-time check is tests/unit/test_backend_protocol.py). A new backend is added to this tuple."""
        return DockerBackend(settings), ProcessBackend(settings), SwarmBackend(settings)


__all__ = [
    "Backend",
    "BackendError",
    "ErrNoBackend",
    "ExecResult",
    "ExecSession",
    "ImageNotFound",
    "Instance",
    "InstanceNotRunning",
    "PullProgress",
    "RuntimeImages",
    "RuntimeImagesError",
    "StartSpec",
    "Started",
    "docker_engine_answers",
    "make_backend",
    "require_backend",
]


def _ping(settings: Settings) -> bool:
    import docker
    import requests

    from workspace_server.provisioner.docker import make_client

    try:
        client = make_client(settings, timeout=5)
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    finally:
        client.close()


async def docker_engine_answers(settings: Settings) -> bool:
    return await anyio.to_thread.run_sync(_ping, settings)


async def make_backend(settings: Settings) -> Backend | None:
    """The configured backend, or None. Raises RuntimeImagesError for a bad RUNTIME_IMAGES (startup)."""
    choice = settings.WORKSPACE_BACKEND
    if choice == "none":
        return None
    RuntimeImages.from_settings(settings)  # fail start-up on a malformed RUNTIME_IMAGES
    if choice == "swarm":
        from workspace_server.provisioner.swarm import SwarmBackend, swarm_manager_answers

        if await swarm_manager_answers(settings):
            log.info("workspace backend: swarm")
            return SwarmBackend(settings)
        log.error(
            "WORKSPACE_BACKEND=swarm but the engine is not an active swarm manager; no workspace backend"
        )
        return None
    if choice in ("docker", "auto") and await docker_engine_answers(settings):
        from workspace_server.provisioner.docker import DockerBackend

        log.info("workspace backend: docker")
        backend = DockerBackend(settings)
        # where this server runs decides how agents are dialled (MOLECULE_IN_DOCKER): ask the engine once
        await anyio.to_thread.run_sync(backend.locate_server)
        return backend
    if choice == "docker":
        log.error("WORKSPACE_BACKEND=docker but the Docker engine does not answer; no workspace backend")
        return None
    if choice == "auto" and settings.is_production:
        log.error("no Docker engine answers and production never falls back to local processes")
        return None
    from workspace_server.provisioner.process import ProcessBackend

    log.info("workspace backend: process (local subprocesses, no isolation)")
    return ProcessBackend(settings)


def require_backend(backend: Backend | None) -> Backend:
    """`backend`, or ErrNoBackend (the reference's nil-receiver sentinel)."""
    if backend is None:
        raise ErrNoBackend
    return backend
