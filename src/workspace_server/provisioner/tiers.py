"""Workspace tiers T1–T4 → container limits (spec 02 §2 "Tiers").

| tier | memory / CPU shares (defaults) | extra                                                   |
|------|--------------------------------|---------------------------------------------------------|
| T1   | 256 MiB / 512                  | read-only rootfs, tmpfs /tmp, all caps dropped, config mount only |
| T2   | 512 MiB / 1024                 |                                                         |
| T3   | 2048 MiB / 2048                | privileged + pid=host, only with ALLOW_PRIVILEGED_TIERS |
| T4   | 4096 MiB / 4096                | T3 + host network + docker.sock, only with ALLOW_PRIVILEGED_TIERS |

`TIERn_MEMORY_MB` / `TIERn_CPU_SHARES` override a tier's numbers when they parse to a value > 0.
NanoCPUs = shares × 1e9 / 1024. Tier 0 and unknown tiers are T2.

DECIDE: the reference grants T3/T4 root-equivalent access to the host (privileged, host PID namespace,
the Docker socket) to whoever can create a workspace with `tier: 3` — and Create defaults to 3. We keep
the memory/CPU of T3/T4 but apply the dangerous flags only when the operator sets
`ALLOW_PRIVILEGED_TIERS=true`. The reference gives T1 no memory/CPU limit; we give it the smallest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workspace_server.config import Settings

MIB = 1024 * 1024
T1_TMPFS = {"/tmp": "rw,noexec,nosuid,size=64m"}  # noqa: S108 - a container path, not the host's
DOCKER_SOCK = "/var/run/docker.sock"
_DEFAULTS = {1: (256, 512), 2: (512, 1024), 3: (2048, 2048), 4: (4096, 4096)}


@dataclass(frozen=True)
class TierLimits:
    tier: int
    memory_mb: int
    cpu_shares: int
    read_only_rootfs: bool = False
    config_mount_only: bool = False  # T1: /workspace and session mounts dropped
    privileged: bool = False
    pid_host: bool = False
    host_network: bool = False
    docker_socket: bool = False

    @property
    def nano_cpus(self) -> int:
        return self.cpu_shares * 1_000_000_000 // 1024

    def host_config(self) -> dict[str, Any]:
        """docker SDK `containers.create` keyword arguments for these limits (mounts/network aside)."""
        kw: dict[str, Any] = {"mem_limit": self.memory_mb * MIB, "nano_cpus": self.nano_cpus}
        if self.read_only_rootfs:
            kw.update(read_only=True, tmpfs=dict(T1_TMPFS), cap_drop=["ALL"])
        if self.privileged:
            kw["privileged"] = True
        if self.pid_host:
            kw["pid_mode"] = "host"
        return kw


def normalise_tier(tier: int | None) -> int:
    return tier if tier in _DEFAULTS else 2


def _positive(raw: str) -> int | None:
    try:
        n = int(raw.strip())
    except ValueError:
        return None
    return n if n > 0 else None


def tier_limits(settings: Settings, tier: int | None) -> TierLimits:
    t = normalise_tier(tier)
    mem, shares = _DEFAULTS[t]
    mem = _positive(getattr(settings, f"TIER{t}_MEMORY_MB")) or mem
    shares = _positive(getattr(settings, f"TIER{t}_CPU_SHARES")) or shares
    dangerous = settings.ALLOW_PRIVILEGED_TIERS and t >= 3
    return TierLimits(
        tier=t,
        memory_mb=mem,
        cpu_shares=shares,
        read_only_rootfs=t == 1,
        config_mount_only=t == 1,
        privileged=dangerous,
        pid_host=dangerous,
        host_network=dangerous and t == 4,
        docker_socket=dangerous and t == 4,
    )
