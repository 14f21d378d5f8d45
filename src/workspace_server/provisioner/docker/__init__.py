"""The Docker backend (spec 02 §2) on the official docker SDK, called from worker threads.

One container per workspace, `ws-<id12>`, labelled `molecule.platform.managed=true` (and with the full
workspace id, so the orphan sweeper needs no prefix match). Volumes: `ws-<id12>-configs` at /configs,
`ws-<id>-workspace` (or a host bind) at /workspace, `ws-<id12>-claude-sessions` for claude-code.

Networking — the agent must advertise a URL that passes the platform's register check
(`http://localhost:<port>`), so it must know its host port before it starts. We pick a free loopback
port ourselves and:
- bridge mode: publish the container's 8000/tcp on `127.0.0.1:<port>`;
- host mode (tests, and T4 when privileged tiers are allowed): run on the host network with
  `A2A_PORT=<port>` and `A2A_HOST=127.0.0.1`, so agents do not collide on 8000.
Either way the URL returned to the orchestrator is `http://127.0.0.1:<port>`.

Config files. With a local engine (no DOCKER_HOST, or a unix socket) and a root server, the configs
volume keeps its name and labels but is a `local` volume bound to the host directory
`<DATA_DIR>/workspaces/<id>/configs`, and the files are written there directly, owned by the image user
(uid 1000 in our image) so the agent can read its 0600 `.auth_token` and write to /configs. That skips
`put_archive`, which mounts the created container's filesystem and was the largest share of a start
(docs/decisions.md "Provision latency"). The first such start of a backend checks, through the engine,
that the engine sees what we wrote (a server in a container with the host's socket does not); if it does
not, the backend goes back to engine-managed volumes for good. Everywhere else (remote engines, a
non-root server, volumes made before) the files go in with `put_archive` into the created-but-not-started
container, so no helper image (the reference's `alpine`) is needed; entries carry the same uid/gid.

Modules, one concern each, composed by `DockerBackend` (backend.py): engine.py (client, names, shared
state), containers.py (create/start/stop/state/inventory), networks.py (network modes and addresses),
volumes.py (volumes, mounts, the host-dir check), hostdirs.py (writing a host-bound volume's files),
pulls.py and images.py (inspect, pull policy, pulls), execs.py (exec, terminal sessions, logs),
files.py (the files API), chatfs.py (chat attachments).
"""

from __future__ import annotations

from workspace_server.provisioner.docker.backend import DockerBackend
from workspace_server.provisioner.docker.engine import (
    AGENT_PORT,
    ENGINE_ERRORS,
    configs_volume,
    is_local_engine,
    is_not_found_error,
    make_client,
    parse_user,
    sessions_volume,
    workspace_volume,
)
from workspace_server.provisioner.docker.execs import DockerExecSession
from workspace_server.provisioner.docker.files import (
    GNU_FIND_PRINT,
    STAT_FIND_PRINT,
    entries_from_archive,
    file_from_archive,
    find_argv,
    parse_find_listing,
    parse_stat_listing,
)
from workspace_server.provisioner.docker.hostdirs import config_tar, write_host_configs

__all__ = [
    "AGENT_PORT",
    "ENGINE_ERRORS",
    "GNU_FIND_PRINT",
    "STAT_FIND_PRINT",
    "DockerBackend",
    "DockerExecSession",
    "config_tar",
    "configs_volume",
    "entries_from_archive",
    "file_from_archive",
    "find_argv",
    "is_local_engine",
    "is_not_found_error",
    "make_client",
    "parse_find_listing",
    "parse_stat_listing",
    "parse_user",
    "sessions_volume",
    "workspace_volume",
    "write_host_configs",
]
