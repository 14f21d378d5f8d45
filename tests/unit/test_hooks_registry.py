"""Provision hook registry (spec 02 §5): order, shared env, first error aborts, nil-safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from workspace_server.config import Settings
from workspace_server.provisioner.hooks import (
    EnvMutator,
    GhIdentityMutator,
    HookConfigError,
    MutatorError,
    MutatorRegistry,
    ProvisionInfo,
    default_mutators,
    run_mutators,
)


class Appender:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self._name, self.log, self.fail = name, log, fail

    @property
    def name(self) -> str:
        return self._name

    async def mutate_env(self, ws_id: str, env: dict[str, str], ctx_info: ProvisionInfo | None) -> None:
        self.log.append(self._name)
        if self.fail:
            raise ValueError("boom")
        env["CHAIN"] = env.get("CHAIN", "") + self._name  # sees what earlier mutators wrote
        env["WS"] = ws_id


async def test_runs_in_registration_order_on_one_env() -> None:
    seen: list[str] = []
    reg = MutatorRegistry()
    for name in ("a", "b", "a"):  # duplicates are kept
        reg.register(Appender(name, seen))
    reg.register(None)  # ignored
    assert (len(reg), reg.names()) == (3, ["a", "b", "a"])
    env = {"KEEP": "1"}
    await reg.run("ws-1", env, ProvisionInfo(role="x"))
    assert env == {"KEEP": "1", "CHAIN": "aba", "WS": "ws-1"}
    assert seen == ["a", "b", "a"]


async def test_first_error_aborts_and_is_wrapped_with_the_name() -> None:
    seen: list[str] = []
    reg = MutatorRegistry()
    reg.register(Appender("first", seen))
    reg.register(Appender("broken", seen, fail=True))
    reg.register(Appender("never", seen))
    env: dict[str, str] = {}
    with pytest.raises(MutatorError) as err:
        await reg.run("ws-1", env)
    assert str(err.value) == 'provisionhook "broken": boom'
    assert err.value.mutator == "broken" and isinstance(err.value.cause, ValueError)
    assert seen == ["first", "broken"]
    assert env["CHAIN"] == "first"


async def test_nil_registry_and_copies() -> None:
    env = {"A": "1"}
    await run_mutators(None, "ws", env)
    assert env == {"A": "1"}
    reg = MutatorRegistry()
    await run_mutators(reg, "ws", env)  # empty: no-op
    assert env == {"A": "1"}
    reg.register(Appender("x", []))
    copy = reg.mutators()
    copy.clear()
    assert reg.names() == ["x"]
    assert isinstance(copy, list) and isinstance(reg.mutators()[0], EnvMutator)


def test_default_mutators_register_gh_identity() -> None:
    reg = default_mutators(Settings(MOLECULE_GH_IDENTITY_CONFIG_FILE=""))
    assert reg.names() == ["gh-identity"]
    assert isinstance(reg.mutators()[0], GhIdentityMutator)


def test_default_mutators_refuse_a_malformed_config(tmp_path: Path) -> None:
    bad = tmp_path / "gh.yaml"
    bad.write_text("roles: [not, a, mapping]\n")
    with pytest.raises(HookConfigError):
        default_mutators(Settings(MOLECULE_GH_IDENTITY_CONFIG_FILE=str(bad)))
