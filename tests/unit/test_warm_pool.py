"""Warm pool pieces without an engine: the waiter a member runs, the identity delivery, the pool keys."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from workspace_server.provisioner.docker.pool_dirs import deliver
from workspace_server.provisioner.docker.pool_engine import delivery_tar, root_tar
from workspace_server.provisioner.docker.pool_model import backing_volume, pool_keys, pool_scope
from workspace_server.provisioner.docker.waiter import IDENTITY_FILE, WAITER

AGENT = """
import os, sys
print(os.environ["WORKSPACE_ID"], os.environ["SECRET"], sys.argv[1:], flush=True)
"""


def fake_agent(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A `python -m fakeagent` package and the env of a waiter whose configs dir is `<tmp>/configs`."""
    pkg = tmp_path / "lib" / "fakeagent"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(AGENT)
    configs = tmp_path / "configs"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib"), "WORKSPACE_CONFIG_PATH": str(configs)}
    env.pop("WORKSPACE_ID", None)
    return configs, env


def start_waiter(env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", WAITER, "python3", "-m", "fakeagent", "--flag"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def test_waiter_runs_the_module_with_the_delivered_env(tmp_path: Path) -> None:
    configs, env = fake_agent(tmp_path)
    configs.mkdir()
    proc = start_waiter(env)
    try:
        time.sleep(0.3)
        assert proc.poll() is None  # waiting for its identity
        uid, gid = os.getuid(), os.getgid()
        deliver(configs, {"config.yaml": b"name: x\n"}, {"WORKSPACE_ID": "ws-1", "SECRET": "s"}, uid, gid)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out.strip() == "ws-1 s ['--flag']"
    assert not (configs / IDENTITY_FILE).exists()  # it held the secrets: the waiter deleted it
    assert (configs / "config.yaml").read_bytes() == b"name: x\n"


def test_waiter_ignores_a_half_written_identity(tmp_path: Path) -> None:
    """The engine-volume delivery has no rename: the waiter may read the file while the engine writes
    it. A truncated JSON object is not acted on; the whole one is."""
    configs, env = fake_agent(tmp_path)
    configs.mkdir()
    proc = start_waiter(env)
    try:
        identity = configs / IDENTITY_FILE
        identity.write_text('{"WORKSPACE_ID": "ws-2", "SEC')
        time.sleep(0.3)
        assert proc.poll() is None
        identity.write_text('{"WORKSPACE_ID": "ws-2", "SECRET": "t"}')
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out.strip() == "ws-2 t ['--flag']"
    assert not identity.exists()


def test_identity_file_is_private(tmp_path: Path) -> None:
    deliver(tmp_path, {}, {"WORKSPACE_ID": "w"}, os.getuid(), os.getgid())
    mode = stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [IDENTITY_FILE]  # no temp file left


def test_pool_keys_and_scope() -> None:
    keys = [("a:1", 2), ("a:1", 3), ("b:2", 2), ("b:2", 3)]
    assert pool_keys("a:1, b:2", "2,3,x,9") == keys  # 9 is no tier: the default, 2
    assert pool_keys("", "2") == []
    scope = pool_scope("sqlite:///a", "/d")
    assert scope == pool_scope("sqlite:///a", "/d") != pool_scope("sqlite:///b", "/d")


def test_engine_delivery_tar_puts_the_identity_last_and_private() -> None:
    files = {"config.yaml": b"name: x\n", ".auth_token": b"t", "skills/a/SKILL.md": b"#"}
    data = delivery_tar(files, {"WORKSPACE_ID": "w"}, 1000, 1001)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        entries = tar.getmembers()
        last = entries[-1]
        assert last.name == IDENTITY_FILE and stat.S_IMODE(last.mode) == 0o600
        f = tar.extractfile(last)
        assert f is not None and json.loads(f.read()) == {"WORKSPACE_ID": "w"}
    modes = {e.name: stat.S_IMODE(e.mode) for e in entries}
    assert modes[".auth_token"] == 0o600 and modes["config.yaml"] == 0o644
    assert {(e.uid, e.gid) for e in entries} == {(1000, 1001)}
    with tarfile.open(fileobj=io.BytesIO(root_tar(1000, 1000))) as tar:
        (root,) = tar.getmembers()
    assert root.name == "configs" and root.isdir() and root.uid == 1000


def test_backing_volume_names_only_member_volumes() -> None:
    label = "molecule.pool.backing"
    assert backing_volume({label: "molecule-pool-abc-configs"}) == "molecule-pool-abc-configs"
    assert backing_volume({label: "ws-abc-workspace"}) is None and backing_volume({}) is None
