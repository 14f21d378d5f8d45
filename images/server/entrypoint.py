#!/usr/bin/python3
"""The server image's entrypoint: join the Docker socket's group, drop to the `molecule` user, exec.

Docker bind-mounts the host's socket with the host's group id, which no image can know in advance, so the
group is read off the socket at start (as the reference image's entrypoint does). Started as root (the
image default), this process:
  1. adds the socket's group (its gid, whatever its name; gid 0 too, as the reference does) to the
     molecule user's groups, when a socket is mounted at the path the server will use;
  2. hands DATA_DIR to molecule when it is a fresh root-owned mount (a host bind) so the SQLite database
     and the generated secrets key can be written — its top directory only, never a recursive chown;
  3. sets the groups, gid and uid (all of them: no way back to root, no capabilities left) and execs the
     command. Nothing runs as root after this.
Started as a non-root user (`docker run --user 1000:1000 --group-add <gid>`), it only execs: the operator
chose the identity and the groups.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys

USER = "molecule"
DEFAULT_SOCKET = "/var/run/docker.sock"


def socket_path() -> str:
    """The engine socket the server will dial: DOCKER_HOST when it is a unix socket, else the default."""
    host = os.environ.get("DOCKER_HOST", "").strip()
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return DEFAULT_SOCKET


def socket_gid(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_gid if stat.S_ISSOCK(st.st_mode) else None


def adopt_data_dir(uid: int, gid: int) -> None:
    path = os.environ.get("DATA_DIR", "/data")
    try:
        st = os.stat(path)
    except OSError:
        return  # the server creates it (inside a directory molecule may write, or it fails loudly)
    if st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
        os.chown(path, uid, gid)


def main(argv: list[str]) -> None:
    if not argv:
        argv = ["workspace-server", "serve"]
    if os.geteuid() != 0:
        os.execvp(argv[0], argv)  # noqa: S606 - the image's own command, never a shell string
    user = pwd.getpwnam(USER)
    groups = [user.pw_gid]
    gid = socket_gid(socket_path())
    if gid is not None and gid not in groups:
        groups.append(gid)
    adopt_data_dir(user.pw_uid, user.pw_gid)
    os.setgroups(groups)
    os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
    os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
    os.environ["HOME"] = user.pw_dir
    os.environ["USER"] = USER
    os.execvp(argv[0], argv)  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
