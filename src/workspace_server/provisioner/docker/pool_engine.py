"""Warm pool members whose /configs is an engine volume (pool.py): for a server without host dirs the
engine sees (`_host_volumes` False: the non-root server image, a remote engine, or an engine that failed
the host-dir check), where pool_dirs.py's direct writes cannot reach a member.

- A member mounts a plain named volume `<member>-configs`; its root is handed to the image user before
  the start (an archive with a `configs/` entry, as the cold path does), so the waiter can delete the
  identity file and the agent can save its token. The engine's path of that volume's data
  (`Mountpoint`) is recorded on the member (POOL_MOUNT_LABEL).
- A claim delivers the config files and then the identity file in one `put_archive` into the running
  member's /configs. Extraction is sequential, so the configs are there before the identity file; the
  engine creates each file root-owned and hands it to the agent only once written (the waiter cannot open
  it before: EACCES, it polls again), and a truncated JSON object never parses, so the waiter never acts
  on half of it.
- Volumes cannot be renamed, so the workspace's `ws-<id12>-configs` is created as a local volume bound to
  the member volume's engine-side path (the engine resolves it on its own filesystem, which it always
  sees) and labelled with the member volume's name (POOL_BACKING_LABEL). A later cold restart mounts
  `ws-<id12>-configs` and sees what the warm container wrote there (token, files API writes); removing
  the workspace's configs volume removes the member volume behind it (volumes.py), and the dangling-volume
  sweep leaves a member volume alone while a workspace volume names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from workspace_server.provisioner.base import CONFIG_MOUNT, TOKEN_FILE
from workspace_server.provisioner.docker.hostdirs import config_tar
from workspace_server.provisioner.docker.waiter import IDENTITY_FILE


def root_tar(uid: int, gid: int) -> bytes:
    """Extracted at `/` before the member starts: the volume root at /configs, owned by the agent."""
    return config_tar({}, uid, gid, prefix=CONFIG_MOUNT.strip("/") + "/")


def delivery_tar(files: Mapping[str, bytes], env: Mapping[str, str], uid: int, gid: int) -> bytes:
    """Extracted at /configs of the claimed member: the config files, then (last) the identity file, 0600
    (it carries the workspace's secrets)."""
    entries = {k: v for k, v in files.items() if k != IDENTITY_FILE}
    entries[IDENTITY_FILE] = json.dumps(dict(env)).encode()
    return config_tar(entries, uid, gid, private=frozenset({TOKEN_FILE, IDENTITY_FILE}))


def bind_opts(mountpoint: str) -> dict[str, str]:
    """Driver options of a local volume that is the member volume's data under another name."""
    return {"type": "none", "o": "bind", "device": mountpoint}
