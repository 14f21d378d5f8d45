"""What the warm pool (pool.py) labels its members with, and reads back from the engine's rows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from workspace_server.provisioner.tiers import normalise_tier

POOL_PREFIX = "molecule-pool-"
POOL_LABEL = "molecule.pool"
POOL_IMAGE_LABEL = "molecule.pool.image"
POOL_TIER_LABEL = "molecule.pool.tier"
POOL_PORT_LABEL = "molecule.pool.port"
POOL_UID_LABEL = "molecule.pool.owner"
# an engine-volume member (pool_engine.py): where the engine keeps its /configs volume's data
POOL_MOUNT_LABEL = "molecule.pool.mountpoint"
# where the engine keeps the data of a member's /workspace volume (`<member>-workspace`)
POOL_WORKSPACE_LABEL = "molecule.pool.workspace"
# on a workspace's volume a claim made as a bind on a member volume: that member volume (it holds the data)
POOL_BACKING_LABEL = "molecule.pool.backing"
MEMBER_VOLUMES = ("-configs", "-workspace")  # suffixes of a member's volumes (`<member><suffix>`)
# whose pool: a hash of the database and data dir, stable across restarts, so a server adopts and removes
# only its own members on an engine other servers (or test runs) share
POOL_SCOPE_LABEL = "molecule.pool.scope"
DANGLING_EVERY = 30.0  # seconds between sweeps of member volumes left by removed containers

Key = tuple[str, int]  # (image ref, tier)


@dataclass(frozen=True)
class Member:
    name: str
    container_id: str
    port: int
    uid: int
    gid: int
    mountpoint: str = ""  # engine-volume member (pool_engine.py); "": host-dir member (pool_dirs.py)
    workspace_mount: str = ""  # its /workspace volume's data; "": none (a config-mount-only tier)


def pool_scope(database_url: str, data_dir: str) -> str:
    """The `molecule.pool.scope` label of a server's members (see POOL_SCOPE_LABEL)."""
    return hashlib.sha256(f"{database_url}\0{data_dir}".encode()).hexdigest()[:16]


def pool_keys(images: str, tiers: str) -> list[Key]:
    refs = [r.strip() for r in images.split(",") if r.strip()]
    nums = sorted({normalise_tier(int(t)) for t in tiers.split(",") if t.strip().isdigit()})
    return [(r, t) for r in refs for t in nums]


def row_name(row: dict[str, Any]) -> str:
    return next((n.lstrip("/") for n in row.get("Names") or []), "")


def member_of(row: dict[str, Any], labels: dict[str, str]) -> Member:
    uid, _, gid = str(labels.get(POOL_UID_LABEL) or "0:0").partition(":")
    port = int(labels.get(POOL_PORT_LABEL) or 0)
    mountpoint = str(labels.get(POOL_MOUNT_LABEL) or "")
    ws_mount = str(labels.get(POOL_WORKSPACE_LABEL) or "")
    name = row_name(row)
    return Member(name, str(row.get("Id") or ""), port, int(uid or 0), int(gid or 0), mountpoint, ws_mount)


def backing_volume(labels: dict[str, str]) -> str | None:
    """The member volume behind a workspace's configs volume (POOL_BACKING_LABEL), if it names one."""
    name = str(labels.get(POOL_BACKING_LABEL) or "")
    return name if is_member_volume(name) else None


def is_member_volume(name: str) -> bool:
    return name.startswith(POOL_PREFIX) and name.endswith(MEMBER_VOLUMES)
