"""Helpers shared by the provisioner integration tests (real Docker engine, real agent processes)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, need
from workspace_server.provisioner import Backend, InstanceNotRunning, StartSpec

AGENT_IMAGE = "molecule/workspace-agent:latest"
WAIT_SECONDS = 60.0


def docker_client() -> Any:
    """A docker SDK client, or a loud skip (a failure in CI) when no engine answers."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception:  # any failure to reach the engine means "no Docker here"
        need("a Docker engine", False)
        raise
    return client


def need_agent_image(client: Any) -> None:
    import docker.errors

    try:
        client.images.get(AGENT_IMAGE)
    except docker.errors.ImageNotFound:
        need(f"the {AGENT_IMAGE} image (make runtime-image)", False)


@pytest.fixture(name="engine")
def engine_fixture() -> Iterator[Any]:
    """Import `engine_fixture` into a test module to use the `engine` fixture: a docker SDK client of an
    engine that has the agent image (a loud skip, a failure in CI, when there is none)."""
    client = docker_client()
    need_agent_image(client)
    yield client
    client.close()


def message_send(text: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": "1",
        "method": "message/send",
        "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}},
    }


async def wait_for_reply(url: str, text: str = "ping") -> dict[str, Any]:
    """POST message/send until the agent answers (it needs a moment to boot); the reply body."""
    deadline = time.monotonic() + WAIT_SECONDS
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                resp = await http.post(url, json=message_send(text))
                if resp.status_code == 200:
                    return dict(resp.json())
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"agent at {url} never answered")
            await asyncio.sleep(0.2)


async def wait_until(check: Callable[[], Any], what: str) -> None:
    """Poll an async predicate until it holds (no timing is asserted; the deadline only ends a hang)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def echoed_text(reply: dict[str, Any]) -> str:
    return str(reply["result"]["parts"][0]["text"])


async def check_tty_and_session(backend: Backend, ws_id: str) -> None:
    """On a running workspace: a tty exec has a terminal, and a pty session takes a resize and runs a shell
    until it exits."""
    tty = await backend.exec(ws_id, ["sh", "-c", "test -t 1 && echo tty"], tty=True)
    assert tty.exit_code == 0 and b"tty" in tty.stdout, tty

    session = await backend.open_session(ws_id, ["/bin/sh"])
    try:
        await session.resize(30, 100)
        await session.write(b"stty size; echo $((6*7)); exit\n")
        out = b""
        while chunk := await session.read():
            out += chunk
    finally:
        await session.close()
    assert b"30 100" in out and b"42" in out, out


async def check_not_running_refused(backend: Backend) -> None:
    """exec, a session and logs of a workspace with no instance raise InstanceNotRunning."""
    other = str(uuid.uuid4())
    with pytest.raises(InstanceNotRunning):
        await backend.exec(other, ["true"])
    with pytest.raises(InstanceNotRunning):
        await backend.open_session(other, ["/bin/sh"])
    with pytest.raises(InstanceNotRunning):
        await backend.logs(other)


async def cleanup(backend: Backend, ids: list[str]) -> None:
    for ws_id in ids:
        try:
            await backend.stop(ws_id)
            await backend.remove_volumes(ws_id, workspace=True)
        except Exception as exc:  # keep cleaning the others
            print(f"cleanup of {ws_id} failed: {exc}")


class WorkspaceIds:
    """Fresh workspace ids, each stopped and its volumes removed at teardown."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def new(self) -> str:
        ws_id = str(uuid.uuid4())
        self.ids.append(ws_id)
        return ws_id


@pytest.fixture(name="ids")
async def ids_fixture(backend: Backend) -> AsyncIterator[WorkspaceIds]:
    """Import `ids_fixture` into a test module that has a `backend` fixture to use the `ids` fixture:
    `WorkspaceIds` whose workspaces are cleaned up on that backend at teardown."""
    w = WorkspaceIds()
    yield w
    await cleanup(backend, w.ids)


def echo_spec(ws_id: str, config_yaml: bytes, /, **fields: Any) -> StartSpec:
    """A StartSpec of the echo runtime with `config_yaml` and a fresh token; `fields` (the image, at least)
    set or override any other field."""
    base: dict[str, Any] = {
        "workspace_id": ws_id,
        "runtime": "echo",
        "config_files": {"config.yaml": config_yaml, ".auth_token": b"tok-" + uuid.uuid4().hex.encode()},
        "platform_url": "http://127.0.0.1:9",  # nothing listens: registration fails, serving does not
    }
    base.update(fields)
    return StartSpec(**base)


class Registry:
    """Debian's `docker-registry` serving on 127.0.0.1:<port> from a temporary storage dir."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        storage = root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n",
            encoding="utf-8",
        )
        self.log = open(root / "registry.log", "wb")
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        self.proc = subprocess.Popen(
            [binary, "serve", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def need_registry_binary() -> None:
    need(
        "Debian's docker-registry (apt-get install docker-registry)",
        shutil.which("docker-registry") is not None,
    )


BACKENDS = ("docker", "swarm")  # the engine-backed backends the provisioning suite runs on
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


SWARM_MUTEX = Path(tempfile.gettempdir()) / "molecule-test-swarm.mutex"  # held while setting up / leaving
SWARM_USERS = Path(tempfile.gettempdir()) / "molecule-test-swarm.users"  # shared by every session using it
SWARM_OWNED = Path(tempfile.gettempdir()) / "molecule-test-swarm.owned"  # a test session initialised it


class _SwarmHold:
    """This process's use of the test swarm. The fixture is imported into several modules, and pytest
    sets up one instance per module: they share this one hold (a count), so the process takes the users
    lock once and the last instance releases it."""

    count = 0
    users: Any = None


@pytest.fixture(name="swarm_manager", scope="session")
def swarm_manager_fixture() -> Iterator[Any]:
    """Import `swarm_manager_fixture` to use `swarm_manager`: a docker SDK client of an engine that is a
    swarm manager. A single-node swarm is initialised on the test engine when it is in none (advertised
    and listening on loopback only) and left again, with the bridge Swarm added, by the last test session
    using it (every session holds SWARM_USERS shared; the one that gets it exclusively at its end is the
    last), so the engine is left as it was found; a swarm no test session made is left alone."""
    client = docker_client()
    need_agent_image(client)
    with open(SWARM_MUTEX, "a+") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        swarm = client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") == "inactive":
            had = "1" if client.networks.list(names=["docker_gwbridge"]) else "0"
            SWARM_OWNED.write_text(had, encoding="utf-8")
            client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        elif swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            need("a Docker engine that is a swarm manager, or in no swarm", False)
        if _SwarmHold.count == 0:
            _SwarmHold.users = open(SWARM_USERS, "a+")
            fcntl.flock(_SwarmHold.users, fcntl.LOCK_SH)
        _SwarmHold.count += 1
    yield client
    _SwarmHold.count -= 1
    if _SwarmHold.count == 0:
        with open(SWARM_MUTEX, "a+") as mutex:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            _leave_if_last(client)
    client.close()


def _leave_if_last(client: Any) -> None:
    """Under the mutex: drop this process's shared hold; when no other session holds one, leave the
    swarm a test session made (and the docker_gwbridge network it added)."""
    import docker.errors

    users = _SwarmHold.users
    _SwarmHold.users = None
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another session still uses the swarm: the last one leaves it
        users.close()
        return
    try:
        if SWARM_OWNED.exists():
            had_gwbridge = SWARM_OWNED.read_text(encoding="utf-8") == "1"
            client.swarm.leave(force=True)
            SWARM_OWNED.unlink()
            for net in [] if had_gwbridge else client.networks.list(names=["docker_gwbridge"]):
                try:
                    net.remove()
                except docker.errors.APIError as exc:  # still in use by someone else's container
                    print(f"docker_gwbridge left in place: {exc}")
    finally:
        users.close()


def task_container(client: Any, ws_id: str) -> Any:
    """The workspace's container: the Docker backend's `ws-<id12>`, or its Swarm service's task."""
    rows = client.containers.list(filters={"label": f"{SERVICE_NAME_LABEL}=ws-{ws_id[:12]}"})
    return rows[0] if rows else client.containers.get(f"ws-{ws_id[:12]}")
