"""Host dirs behind warm pool members' /configs (pool.py): where a claim writes the identity, and how the dir
becomes the workspace's own configs dir.

A member's /configs is a local volume bound to `<DATA_DIR>/warm-pool/<member>`. A claim writes the config
files there directly (microseconds, where the engine's archive API took 150 ms on a loaded host), then
the identity file, then renames the dir to the workspace's host config dir and creates the workspace's
`ws-<id12>-configs` volume bound to it: the running container keeps its mount (a bind mount follows the
directory, not its path), and from then on the workspace's configs are exactly where a cold start would
have put them — a restart reuses them, a delete removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from workspace_server.config import Settings
from workspace_server.provisioner.docker.hostdirs import write_host_configs
from workspace_server.provisioner.docker.waiter import IDENTITY_FILE


def pool_dir(settings: Settings, member: str) -> Path:
    return Path(settings.DATA_DIR).resolve() / "warm-pool" / member


def claims_dir(settings: Settings) -> Path:
    """`<container id>` → workspace id of claimed members: a container's labels cannot change after its
    create, so this server-side record (the agent cannot write it) is what tells the orphan sweep and the
    image refresh whose a claimed member is."""
    return Path(settings.DATA_DIR).resolve() / "warm-pool" / "claims"


def record_claim(settings: Settings, container_id: str, ws_id: str, env: dict[str, str]) -> None:
    """Also the workspace env (secrets included, hence 0600, root's): a cold container has it as its own
    env, so every exec sees it; a claimed member's execs get it from here (`_exec_env`)."""
    d = claims_dir(settings)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = d / f".{container_id}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"workspace_id": ws_id, "env": env}, f)
    os.replace(tmp, d / container_id)


def read_claim(settings: Settings, container_id: str) -> dict[str, Any] | None:
    if not container_id.isalnum():
        return None
    try:
        data = json.loads((claims_dir(settings) / container_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def forget_claims(settings: Settings, keep: set[str]) -> None:
    """Drop the records of containers that are gone."""
    d = claims_dir(settings)
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name not in keep and not p.name.startswith("."):
            with contextlib.suppress(OSError):
                p.unlink()


def make_member_dir(path: Path, uid: int, gid: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)  # the waiter deletes the identity file: the agent user owns the dir
    path.chmod(0o755)


def remove_member_dir(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


def deliver(path: Path, files: dict[str, bytes], env: dict[str, str], uid: int, gid: int) -> None:
    """The config files, then the identity file: written to a temp name (0600, the agent's; it carries the
    workspace's secrets) and renamed into place, so the waiter never reads half of it."""
    if files:
        write_host_configs(path, files, uid, gid)
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        tmp = f".{IDENTITY_FILE}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            os.fchown(fd, uid, gid)
            os.write(fd, json.dumps(env).encode())
        finally:
            os.close(fd)
        os.rename(tmp, IDENTITY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def adopt_dir(path: Path, own: Path) -> None:
    """The member's dir becomes the workspace's config dir (`own` must not exist: claims are fresh only)."""
    own.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, own)


def undo(path: Path, own: Path) -> None:
    """A claim that failed half-way leaves neither dir behind."""
    for p in (path, own):
        with contextlib.suppress(OSError):
            remove_member_dir(p)
