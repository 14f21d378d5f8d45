"""The Docker backend's warm pool: started, unassigned agent containers a create claims (issue 14 §3).

A member is created like a cold start of its (image, tier) — same tier limits, network mode, published
loopback port, restart policy — but named `molecule-pool-<hex>`, labelled `molecule.pool=1` (plus its
image, tier and port), with its own `<name>-configs` volume at /configs and `<name>-workspace` at
/workspace (pool_members.py), and running `waiter.WAITER` ahead of the image's command, which waits for
the identity file. Names matter:
- the orphan sweep lists `ws-` names only, so it never sees an unclaimed member;
- a claim is `rename(molecule-pool-<hex> → ws-<id12>)` by the member's *name*: the engine renames a
  name once, so of two claims of one member (two creates here, or two replicas on one engine) exactly one
  succeeds and the other meets 404 and takes the next member — the claim is atomic without a lock held
  across engine calls. The in-process deque only spreads concurrent claims over different members.
After the rename the container is the workspace's instance in every respect the backend looks at (its
name); on a bridge network the claim rejoins the network so its DNS answers the new name
(`NetworksMixin._reattach`), creates the workspace's configs and /workspace volumes on the member's data,
writes the config files and the identity file (`build_env`, the cold path's env) into its /configs,
records its port for the workspace and returns the same `Started` as a cold start, so the orchestrator
registers the url with egress exactly as for a cold one.

Pool state lives in the engine, not in this process: `run_warm_pool` lists members by label on every pass,
adopts the ones of a configured key whose image is still the tag's current image, removes the rest
(stale image, key no longer configured, beyond size, exited) and creates the missing ones. So a restart
adopts its members, shrinking or disabling the pool removes them, and `drain_warm_pool(image)` (image
refresh) removes the members of a moving tag so the next pass refills from the new image. Dangling member
volumes (their container gone) are removed on the same pass.

Two ways to deliver, by what the server can do (`_engine_volumes`): a root server whose engine sees its
dirs writes into the member's host-bound configs dir (pool_dirs.py); any other (the non-root server
image, a remote engine) hands the engine an archive and binds the workspace's configs volume to the
member volume's data (pool_engine.py). A member carries its mode (POOL_MOUNT_LABEL); members of the other
mode are replaced on the next pass.

Not pooled (cold path): a `/workspace` bind (workspace_access), the claude-code runtime (sessions volume),
an image whose user is a name (its uid is looked up in a running container by the cold path), and in the
engine-volume mode a read-only-rootfs tier (the volume root is handed to the agent by an archive at `/`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from collections.abc import Mapping
from typing import Any

import anyio
import docker.errors

from workspace_server.provisioner.base import (
    CONFIG_MOUNT,
    MANAGED_LABEL,
    WORKSPACE_LABEL,
    BackendError,
    Started,
    StartSpec,
    build_env,
    gather_config_files,
    instance_name,
)
from workspace_server.provisioner.docker.engine import (
    ENGINE_ERRORS,
    configs_volume,
    is_not_found_error,
    workspace_volume,
)
from workspace_server.provisioner.docker.pool_dirs import (
    adopt_dir,
    deliver,
    forget_claims,
    pool_dir,
    read_claim,
    record_claim,
    remove_member_dir,
    undo,
)
from workspace_server.provisioner.docker.pool_engine import bind_opts, delivery_tar
from workspace_server.provisioner.docker.pool_members import PoolMembersMixin
from workspace_server.provisioner.docker.pool_model import (
    DANGLING_EVERY,
    POOL_BACKING_LABEL,
    POOL_IMAGE_LABEL,
    POOL_LABEL,
    POOL_MOUNT_LABEL,
    POOL_PREFIX,
    POOL_SCOPE_LABEL,
    POOL_TIER_LABEL,
    POOL_WORKSPACE_LABEL,
    Key,
    Member,
    member_of,
    pool_keys,
    row_name,
)
from workspace_server.provisioner.tiers import TierLimits, normalise_tier, tier_limits
from workspace_server.workspaces.files import UnsafePath

log = logging.getLogger(__name__)


class WarmPoolMixin(PoolMembersMixin):
    _warm: dict[Key, collections.deque[Member]]
    _dangling_at: float

    def _pool_state(self) -> dict[Key, collections.deque[Member]]:
        if not hasattr(self, "_warm"):  # lazily: DockerBase.__init__ stays the cold path's alone
            self._warm = {}
            self._dangling_at = 0.0
        return self._warm

    def _pool_size(self) -> int:
        return max(0, self.settings.WARM_POOL_SIZE)

    # ---- claim (on the start path, in a worker thread) ----
    def _claim_warm(self, spec: StartSpec, limits: TierLimits, bind_path: str | None) -> Started | None:
        """A warm member turned into the workspace's instance, or None (no member: the cold path)."""
        if bind_path is not None or spec.runtime == "claude-code":
            return None
        queue = self._pool_state().get((spec.image, normalise_tier(spec.tier)))
        if not queue or not self._fresh(spec.workspace_id):
            return None
        while queue:
            with self._lock:
                member = queue.popleft() if queue else None
            if member is None:
                return None
            started = self._claim(member, spec, limits)
            if started is not None:
                return started
        return None

    def _fresh(self, ws_id: str) -> bool:
        """Only a workspace with no configs yet is given a member: a restart reuses its configs volume,
        which a member cannot mount, so it starts cold."""
        own = self._own_dir(ws_id)
        if own is None or own.exists():
            return False
        try:
            self.client.api.inspect_volume(configs_volume(ws_id))
        except docker.errors.NotFound:
            return True
        except ENGINE_ERRORS:
            return False
        return False

    def _claim(self, member: Member, spec: StartSpec, limits: TierLimits) -> Started | None:
        t0 = time.monotonic()
        name, volume = instance_name(spec.workspace_id), configs_volume(spec.workspace_id)
        path, own = pool_dir(self.settings, member.name), self._own_dir(spec.workspace_id)
        assert own is not None  # _fresh checked it
        # the workspace's configs volume, overlapped with the rename (a bind volume's device is looked at
        # when it is mounted, not now: `own` appears below); engine mode: the member volume's data
        labels = {MANAGED_LABEL: "true", WORKSPACE_LABEL: spec.workspace_id}
        if member.mountpoint:
            opts = bind_opts(member.mountpoint)
            labels[POOL_BACKING_LABEL] = f"{member.name}-configs"
        else:
            opts = {"type": "none", "o": "bind", "device": str(own)}
        made = self._pool.submit(self.client.api.create_volume, volume, driver_opts=opts, labels=labels)
        ws_made = self._pool.submit(self._workspace_volume_of, member, spec.workspace_id)
        try:
            self._rename(member.name, name)
        except ENGINE_ERRORS as exc:
            concurrent.futures.wait([made, ws_made])
            self._remove_volume(volume, False)  # fresh: it was not there before this claim
            self._undo_workspace_volume(ws_made, spec.workspace_id)
            # 404: another claim (or a drain) took it first; anything else: leave it to the next pass
            if not (isinstance(exc, docker.errors.NotFound) or is_not_found_error(str(exc))):
                log.warning("claiming pool member %s failed: %s", member.name, exc)
            return None
        _kw, extra = self._network_kwargs(limits, member.port)
        env = build_env(spec, CONFIG_MOUNT, extra)
        try:
            self._reattach(member.container_id, name, limits)  # the new name on the agents' network
            if member.mountpoint:  # by id: the name is ours now, but the id cannot be another container
                tar = delivery_tar(gather_config_files(spec), env, member.uid, member.gid)
                self.client.api.put_archive(member.container_id, CONFIG_MOUNT, tar)
            else:
                deliver(path, gather_config_files(spec), env, member.uid, member.gid)
                adopt_dir(path, own)
            made.result()
            if ws_made.result() is False:
                raise OSError(f"{workspace_volume(spec.workspace_id)} exists: its data is not the member's")
            record_claim(self.settings, member.container_id, spec.workspace_id, env)
        except (*ENGINE_ERRORS, UnsafePath, OSError) as exc:
            concurrent.futures.wait([made, ws_made])
            log.warning("delivering the identity to %s failed, starting cold: %s", member.name, exc)
            self._force_remove(name)
            if not member.mountpoint:
                undo(path, own)
            self._remove_volume(volume, False)  # engine mode: the member volume is dangling, swept later
            self._undo_workspace_volume(ws_made, spec.workspace_id)
            return None
        with self._lock:
            self._ports.pop(member.name, None)
            self._ports[spec.workspace_id] = member.port
        log.info(
            "workspace %s claimed warm container %s (%.0f ms)",
            spec.workspace_id,
            member.name,
            1000 * (time.monotonic() - t0),
        )
        return Started(url=f"http://127.0.0.1:{member.port}", instance_id=member.container_id)

    def _workspace_volume_of(self, member: Member, ws_id: str) -> bool | None:
        """`ws-<id12>-workspace` as a bind on the member's /workspace volume, so what the agent writes there
        while warm is what a later cold start mounts. True: made; None: the member has none (a config-mount-
        only tier, or a member of an older server); False: the volume was there already (its data is not the
        member's: the claim goes cold and leaves it alone)."""
        if not member.workspace_mount:
            return None
        name = workspace_volume(ws_id)
        labels = {
            MANAGED_LABEL: "true",
            WORKSPACE_LABEL: ws_id,
            POOL_BACKING_LABEL: f"{member.name}-workspace",
        }
        info = self.client.api.create_volume(
            name, driver_opts=bind_opts(member.workspace_mount), labels=labels
        )
        return (info.get("Options") or {}).get("device") == member.workspace_mount

    def _undo_workspace_volume(self, made: concurrent.futures.Future[bool | None], ws_id: str) -> None:
        """A failed claim removes the workspace volume it made (never one that was there before)."""
        if made.exception() is None and made.result() is True:
            self._remove_volume(workspace_volume(ws_id), False)

    def _workspace_of(self, container_id: str, labels: Mapping[str, str]) -> str | None:
        own = labels.get(WORKSPACE_LABEL)
        if own or labels.get(POOL_LABEL) != "1":
            return own or None
        claim = read_claim(self.settings, container_id)
        return str(claim.get("workspace_id") or "") or None if claim else None

    def _exec_env(self, container: Any) -> list[str]:
        labels = (container.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(POOL_LABEL) != "1":
            return []
        claim = read_claim(self.settings, str(container.id))
        env = claim.get("env") if claim else None
        return [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else []

    def _rename(self, member: str, name: str) -> None:
        """`member` → `name`; a container already holding `name` is replaced (start replaces whatever runs
        for the workspace). Renamed first and removed only on the conflict: one engine call, usually."""
        try:
            self.client.api.rename(member, name)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            self._force_remove(name)
            self.client.api.rename(member, name)

    # ---- the refill pass (run_warm_pool) ----
    async def run_warm_pool(self) -> None:
        """Keep every configured key topped up until cancelled; returns at once when the pool is off."""
        keys = pool_keys(self.settings.WARM_POOL_IMAGES, self.settings.WARM_POOL_TIERS)
        if self._pool_size() <= 0 or not keys:
            await self._run(self._remove_members, lambda _m: True)  # a pool switched off leaks nothing
            return
        interval = max(0.05, self.settings.WARM_POOL_INTERVAL)
        while True:
            try:
                await self._run(self._refill_once, keys)
            except (*ENGINE_ERRORS, BackendError) as exc:  # the engine away: the next pass tries again
                log.warning("warm pool pass failed: %s", exc)
            await anyio.sleep(interval)

    async def drain_warm_pool(self, image: str) -> None:
        """Remove the unclaimed members of `image` (its tag moved); the next pass refills."""
        await self._run(self._remove_members, lambda labels: labels.get(POOL_IMAGE_LABEL) == image)

    def _list_members(self) -> list[dict[str, Any]]:
        labels = [f"{POOL_LABEL}=1", f"{POOL_SCOPE_LABEL}={self._pool_scope()}"]
        rows = self.client.api.containers(all=True, filters={"label": labels})
        return [r for r in rows if row_name(r).startswith(POOL_PREFIX)]  # renamed ones are claimed

    def _remove_members(self, which: Any) -> None:
        state = self._pool_state()
        for row in self._list_members():
            labels = row.get("Labels") or {}
            if which(labels):
                self._drop(state, row_name(row))

    def _drop(self, state: dict[Key, collections.deque[Member]], name: str) -> None:
        with self._lock:
            for queue in state.values():
                for m in [m for m in queue if m.name == name]:
                    queue.remove(m)
            self._ports.pop(name, None)
        try:
            # by name, like a claim's rename: whichever of the two the engine does first wins, and a
            # member renamed meanwhile (claimed) is a 404 here, so its dir and volume are left alone
            self.client.api.remove_container(name, force=True)
        except ENGINE_ERRORS as exc:
            if not (isinstance(exc, docker.errors.NotFound) or is_not_found_error(str(exc))):
                log.warning("removing pool member %s failed: %s", name, exc)
            return
        for suffix in ("-configs", "-workspace"):
            self._remove_volume(f"{name}{suffix}", False)
        remove_member_dir(pool_dir(self.settings, name))

    def _refill_once(self, keys: list[Key]) -> None:
        state = self._pool_state()
        size = self._pool_size()
        current = {ref: self._current_image(ref) for ref in {k[0] for k in keys}}
        found: dict[Key, list[Member]] = {k: [] for k in keys}
        for row in self._list_members():
            labels = row.get("Labels") or {}
            key = (str(labels.get(POOL_IMAGE_LABEL) or ""), int(labels.get(POOL_TIER_LABEL) or 0))
            fresh = current.get(key[0]) is not None and row.get("ImageID") == current.get(key[0])
            # a member of the other delivery mode (the host-dir check failed since) cannot be claimed
            fresh = fresh and bool(labels.get(POOL_MOUNT_LABEL)) == self._engine_volumes()
            # a member without a /workspace volume (an older server's) would not carry what is written there
            wants_ws = not tier_limits(self.settings, key[1]).config_mount_only
            fresh = fresh and bool(labels.get(POOL_WORKSPACE_LABEL)) == wants_ws
            if key not in found or not fresh or row.get("State") != "running" or len(found[key]) >= size:
                self._drop(state, row_name(row))
                continue
            found[key].append(member_of(row, labels))
        with self._lock:
            for key in keys:
                # keep the deque's order for members still there; add adopted ones
                have = {m.name for m in found[key]}
                queue = state.setdefault(key, collections.deque())
                known = {m.name for m in queue}
                for m in [m for m in queue if m.name not in have]:
                    queue.remove(m)
                queue.extend(m for m in found[key] if m.name not in known)
                for m in found[key]:
                    self._ports[m.name] = m.port
        for key in keys:
            for _ in range(size - len(found[key])):
                member = self._create_member(key)
                if member is None:
                    break
                with self._lock:
                    state[key].append(member)
        if time.monotonic() - self._dangling_at > DANGLING_EVERY:
            self._dangling_at = time.monotonic()
            self._remove_dangling_volumes()
            ids = self.client.api.containers(all=True, quiet=True, filters={"label": f"{POOL_LABEL}=1"})
            forget_claims(self.settings, {str(r["Id"]) for r in ids})
