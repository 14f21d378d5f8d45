"""Services a fault test starts for itself, so that it may stop them (issue 11 §5).

Each class runs one private instance on its own port, data directory and socket, and stops only that
instance: the shared Postgres, Redis and Docker engine the rest of the suite uses are never touched.

- `PgCluster`: a throwaway Postgres cluster (initdb + pg_ctl) on a free port, its socket in its own dir;
  as root it runs as the `postgres` user (Postgres refuses root);
- `RedisServer`: a `redis-server` on a free port, no persistence;
- `Dockerd`: a private `dockerd` (own --data-root, --exec-root, --pidfile, unix socket; its own bridge
  interface, created here with an address of its own, and `--iptables=false --ip-forward=false`, so it
  never touches the main engine's docker0 or iptables rules — NOT `--bridge=none`: with it dockerd deletes
  any interface named docker0 at start, the main engine's included) with the agent image loaded into it;
  agents use host networking;
- `ServerProcess`: `workspace-server serve` as a real subprocess (it can be killed with SIGKILL).

Not a test module (no `test_` prefix): pytest does not collect it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

IS_ROOT = os.geteuid() == 0
AGENT_IMAGE = "molecule/workspace-agent:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(check: object, what: str, timeout: float, interval: float = 0.1) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- Postgres


def pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl (Debian keeps them off PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    return None


class PgCluster:
    """`start()` initialises (once) and starts; `stop(mode)` is `pg_ctl stop -m mode` (immediate: a crash,
    recovered from the WAL on the next start)."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("initdb/pg_ctl not found")
        self.bindir = bindir
        self.port = free_port()
        # under /tmp itself: the postgres user must be able to traverse every parent directory
        self.root = Path(tempfile.mkdtemp(prefix="wsfault-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.sockets.mkdir()
        if IS_ROOT:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._initialised = False

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if IS_ROOT:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {res.stdout}{res.stderr}\n{_tail(self.log)}")

    def start(self) -> PgCluster:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")
            self._initialised = True
        opts = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- Redis


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found")
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="wsfault-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.root), "--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), "redis-server to listen", 15, 0.05)
        return self

    def stop(self) -> None:
        """SIGKILL: Redis gone at once, every client connection reset."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- dockerd


class Dockerd:
    """A private Docker engine. `stop()` is SIGTERM (the engine stops its containers, as a service
    restart does); `start()` again brings it up on the same state, which restarts `unless-stopped`
    containers."""

    def __init__(self) -> None:
        binary = shutil.which("dockerd")
        if binary is None:
            raise RuntimeError("dockerd not found")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="wsfault-dockerd-"))
        self.sock = self.root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # short: the exec root holds the containerd socket, whose path must stay under 108 bytes
        self.exec_root = Path(tempfile.mkdtemp(prefix="wsf-x-"))
        self.bridge = f"wsf{secrets.token_hex(3)}"  # an interface name: at most 15 characters

    def _ensure_bridge(self) -> None:
        """Our own bridge for the engine's default network, on a 10.251.x.0/24 no interface uses."""
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode == 0:
            return
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        third = next(n for n in range(200, 255) if f" 10.251.{n}." not in used)
        for argv in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.251.{third}.1/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            res = subprocess.run(argv, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr}")

    def start(self, timeout: float = 60) -> Dockerd:
        self._ensure_bridge()
        argv = [
            self.binary,
            "-H",
            self.host,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--containerd-namespace",
            "wsfault",
            "--containerd-plugins-namespace",
            "wsfault-plugins",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._answers, "the private dockerd to answer", timeout, 0.2)
        except TimeoutError:
            raise RuntimeError(f"private dockerd did not start:\n{_tail(self.log)}") from None
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"private dockerd exited:\n{_tail(self.log)}")
        res = subprocess.run(
            ["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=10,
        )
        return res.returncode == 0

    def load_image(self, image: str = AGENT_IMAGE, timeout: float = 120) -> None:
        """`docker save` from the main engine piped into `docker load` of this one."""
        have = subprocess.run(["docker", "-H", self.host, "image", "inspect", image], capture_output=True)
        if have.returncode == 0:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, capture_output=True, timeout=timeout
        )
        assert save.stdout is not None
        save.stdout.close()
        if save.wait(timeout=timeout) != 0 or load.returncode != 0:
            raise RuntimeError(f"loading {image} into the private dockerd failed: {load.stderr!r}")

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        if self.proc is None and self.sock.parent.exists():
            with contextlib.suppress(Exception):
                self.start()
        # remove every container first, so the engine's shutdown has nothing to stop
        with contextlib.suppress(Exception):
            ids = subprocess.run(
                ["docker", "-H", self.host, "ps", "-aq"], capture_output=True, text=True, timeout=30
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", self.host, "rm", "-f", *ids], capture_output=True, timeout=60)
        self.stop()
        # the engine leaves its network namespace mount (exec root/netns/default) behind: unmount whatever
        # is still mounted under our dirs, then what is left is plain files
        for mount in reversed(_mounts_under(self.root, self.exec_root)):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        subprocess.run(["rm", "-rf", str(self.root), str(self.exec_root)], capture_output=True, timeout=120)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)


def _mounts_under(*roots: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [p for p in points if any(p == str(r) or p.startswith(f"{r}/") for r in roots)]


# ---------------------------------------------------------------- the server


class ServerProcess:
    """`workspace-server serve` as a subprocess on a free port; `kill()` is SIGKILL, `start()` again runs
    a new process on the same port, database and settings."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = workdir / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "PLATFORM_URL": self.url,
            "RATE_LIMIT": "100000",
            "ACCESS_LOG": "off",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 60) -> ServerProcess:
        argv = [sys.executable, "-m", "workspace_server", "serve"]
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv, env=self.env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        try:
            wait_until(self._healthy, "the server to answer /health", timeout, 0.1)
        except TimeoutError:
            raise RuntimeError(f"server did not start:\n{_tail(self.log)}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{_tail(self.log)}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log, lines)
