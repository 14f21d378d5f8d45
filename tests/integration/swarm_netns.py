"""A two-node swarm of the test's own, in network namespaces it creates (tests/integration/
test_swarm_multinode.py; docs/operations.md "Docker Swarm").

    host netns            <p>-lan netns (bridge br0)          <p>-m netns           <p>-w netns
    <p>h 198.18.N.1/24 ── <p>hl ─┬─ br0 ─┬─ <p>ml ──────────── <p>m 198.18.N.2/24    dockerd (manager)
                                 └───────┴─ <p>wl ──────────── <p>w 198.18.N.3/24    dockerd (worker)

- Two more `dockerd`s, each in its own network namespace (entered with `nsenter --net`, not `ip netns
  exec`, which remounts /sys and hides the cgroup mounts dockerd needs) and UTS namespace (its own
  hostname, so the nodes differ), with its own data root, exec root, pid file and unix socket under one
  temporary directory. Neither touches the test engine on the host or its swarm: the single-node suite
  and other test sessions go on as they are.
- One L2 segment for the three: the bridge sits in a namespace of its own, so bridged frames meet no
  host firewall (the host engine's FORWARD policy is DROP). Addresses come from 198.18.0.0/15 (RFC 2544
  benchmark range), a /24 no interface of the host uses; the namespaces have no default route, so nothing
  in them reaches past the host's end of the link.
- The manager (no bridge, no iptables: it runs no task here) inits the swarm advertised on its address;
  the worker (iptables on, inside its namespace only: the published port's DNAT and the masquerade of its
  containers' traffic to the server) joins it; the worker's node gets the label
  `molecule.volume-host=<WORKER_LABEL>`. The agent image goes into the worker with `docker save | load`
  (the same image id). No registry.

`teardown()` runs whatever `setup()` got through: processes in the namespaces (dockerd, its containerd,
shims, proxies) stopped by pid, mounts under the temporary directory unmounted, the namespaces deleted
(and with them the veths and the bridge), the directory removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER_LABEL = "w1"
TOOLS = ("ip", "nsenter", "unshare", "dockerd", "docker", "mount", "umount")


class RigError(AssertionError):
    """The machine lacks something the multi-node test needs: the test fails with this reason."""


def run(*argv: str, input: bytes | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RigError(f"`{' '.join(argv)}` exited {proc.returncode}: {err[-1500:]}")
    return proc.stdout.decode(errors="replace")


def missing_capability() -> str | None:
    """Why this machine cannot run the rig, or None."""
    if os.geteuid() != 0:
        return "root is needed (network namespaces, a second dockerd)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2, util-linux, docker.io)"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no address of this host is in (a concurrent session picks another)."""
    used = [
        ipaddress.ip_interface(word)
        for line in run("ip", "-o", "-4", "addr", "show").splitlines()
        for word in line.split()[3:4]
    ]
    nets = list(ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24))
    random.shuffle(nets)
    for net in nets:
        if not any(addr.ip in net for addr in used):
            return net
    raise RigError("no free /24 in 198.18.0.0/15")


@dataclass
class Node:
    name: str  # the netns, the hostname
    addr: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
        return run("docker", "-H", self.sock, *args, input=input, timeout=timeout)


@dataclass
class Rig:
    prefix: str = field(default_factory=lambda: f"mn{os.getpid() % 10000:04d}{random.randrange(16):x}")
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="molecule-mn-", dir="/tmp")))
    subnet: ipaddress.IPv4Network | None = None
    namespaces: list[str] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def host_addr(self) -> str:
        assert self.subnet is not None
        return str(self.subnet[1])

    @property
    def manager(self) -> Node:
        return self.nodes["m"]

    @property
    def worker(self) -> Node:
        return self.nodes["w"]

    # ---- setup ----
    def setup(self, image: str) -> None:
        t0 = time.monotonic()
        self._network()
        self.timings["network"] = time.monotonic() - t0
        t = time.monotonic()
        for node in self.nodes.values():
            self._start_dockerd(node)
        for node in self.nodes.values():
            self._wait_dockerd(node)
        self.timings["dockerds"] = time.monotonic() - t
        t = time.monotonic()
        m, w = self.manager, self.worker
        m.docker("swarm", "init", "--advertise-addr", m.addr, "--listen-addr", f"{m.addr}:2377")
        token = m.docker("swarm", "join-token", "-q", "worker").strip()
        w.docker("swarm", "join", "--token", token, "--advertise-addr", w.addr, f"{m.addr}:2377")
        node_id = w.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        m.docker("node", "update", "--label-add", f"molecule.volume-host={WORKER_LABEL}", node_id)
        self.timings["swarm"] = time.monotonic() - t
        t = time.monotonic()
        save = subprocess.run(["docker", "save", image], capture_output=True, timeout=180)
        if save.returncode != 0:
            raise RigError(f"docker save {image}: {save.stderr.decode(errors='replace')[-500:]}")
        w.docker("load", "-q", input=save.stdout, timeout=180)
        self.timings["image load"] = time.monotonic() - t

    def _network(self) -> None:
        p = self.prefix
        self.subnet = _free_subnet()
        lan = f"{p}-lan"
        for ns in (lan, f"{p}-m", f"{p}-w"):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        run("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", lan, "link", "set", "br0", "up")
        # the host's end
        run("ip", "link", "add", f"{p}h", "type", "veth", "peer", "name", f"{p}hl", "netns", lan)
        run("ip", "addr", "add", f"{self.host_addr}/24", "dev", f"{p}h")
        run("ip", "link", "set", f"{p}h", "up")
        ports = [f"{p}hl"]
        for short, index in (("m", 2), ("w", 3)):
            ns, addr = f"{p}-{short}", str(self.subnet[index])
            veth, peer = f"{p}{short}", f"{p}{short}l"
            run("ip", "link", "add", veth, "netns", ns, "type", "veth", "peer", "name", peer, "netns", lan)
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", f"{p}{short}")
            run("ip", "-n", ns, "link", "set", f"{p}{short}", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            ports.append(f"{p}{short}l")
            root = self.root / short
            root.mkdir()
            self.nodes[short] = Node(name=ns, addr=addr, root=root)
        for port in ports:
            run("ip", "-n", lan, "link", "set", port, "master", "br0")
            run("ip", "-n", lan, "link", "set", port, "up")

    def _start_dockerd(self, node: Node) -> None:
        r = node.root
        flags = ["--iptables=false", "--bridge=none"] if node is self.manager else []
        argv = [
            "nsenter", f"--net=/var/run/netns/{node.name}", "unshare", "--uts", "sh", "-c",
            'hostname "$0" && exec "$@"', node.name,
            "dockerd", "--data-root", f"{r}/data", "--exec-root", f"{r}/exec", "--pidfile", f"{r}/docker.pid",
            "-H", node.sock, "--shutdown-timeout", "3", *flags,
        ]  # fmt: skip
        log = open(r / "dockerd.log", "wb")  # the daemon's: it keeps its own copy
        node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _wait_dockerd(self, node: Node) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert node.proc is not None
            if node.proc.poll() is not None:
                raise RigError(f"dockerd in {node.name} exited {node.proc.returncode}: {self.log_tail(node)}")
            with contextlib.suppress(RigError, subprocess.TimeoutExpired):
                node.docker("version", "--format", "{{.Server.Version}}", timeout=5)
                return
            time.sleep(0.2)
        raise RigError(f"dockerd in {node.name} did not answer in 60 s: {self.log_tail(node)}")

    def log_tail(self, node: Node, lines: int = 15) -> str:
        try:
            text = (node.root / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""
        keep = [
            ln for ln in text.splitlines() if any(w in ln for w in ("level=error", "level=fatal", "fail"))
        ]
        return "\n".join((keep or text.splitlines())[-lines:])

    # ---- teardown ----
    def teardown(self) -> list[str]:
        """Everything setup made, gone; returns what could not be removed (the test reports it)."""
        problems: list[str] = []
        for node in self.nodes.values():
            problems += self._stop_dockerd(node)
        for ns in self.namespaces:
            problems += self._kill_netns_pids(ns)
        problems += self._unmount_under(self.root)
        for ns in reversed(self.namespaces):
            try:
                run("ip", "netns", "del", ns)
            except RigError as exc:
                problems.append(str(exc))
        with contextlib.suppress(RigError):  # gone with its peer's namespace, normally
            run("ip", "link", "del", f"{self.prefix}h")
        try:
            shutil.rmtree(self.root)
        except OSError as exc:
            problems.append(f"rm -rf {self.root}: {exc}")
        return problems

    def _stop_dockerd(self, node: Node) -> list[str]:
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return []
        with contextlib.suppress(RigError, subprocess.TimeoutExpired):
            node.docker("swarm", "leave", "--force", timeout=20)
        proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return [f"dockerd in {node.name} needed SIGKILL"]
        return []

    def _kill_netns_pids(self, ns: str) -> list[str]:
        """What is still running in the namespace is ours (it was made by this rig): end it by pid."""
        try:
            pids = [int(x) for x in run("ip", "netns", "pids", ns).split()]
        except RigError:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"{len(pids)} process(es) left in {ns}, killed"] if pids else []

    def _unmount_under(self, root: Path) -> list[str]:
        """dockerd's overlay and netns mounts under the rig's directory, deepest first."""
        mounts = []
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == str(root) or point.startswith(f"{root}/"):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            with contextlib.suppress(RigError):
                run("umount", "-l", point)
        return [f"{len(mounts)} mount(s) left under {root}, unmounted"] if mounts else []
