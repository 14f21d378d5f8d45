"""The egress policy against real listeners on private addresses (issue 11 §2).

`egress_netns_probe` runs in a network + mount namespace this test creates (`unshare -nm`): the
private addresses live on that namespace's own loopback device, so no packet leaves the machine. It
starts the app (SQLite: the namespace cannot reach the shared Postgres) in production, allow-list,
open, dev and SaaS modes and reports, per case, the reply and how many requests reached a listener.
Needs root (or user namespaces) and iproute2; skips with the reason where namespaces are unavailable,
and fails instead under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


def _namespaces() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(
        ["unshare", "-nm", "ip", "link", "set", "lo", "up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"`unshare -nm` is not permitted here: {probe.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    why = _namespaces()
    if why is not None:
        if IN_CI:
            pytest.fail(f"network namespaces are required in CI: {why}")
        pytest.skip(f"network namespaces unavailable: {why}")
    proc = subprocess.run(
        ["unshare", "-nm", sys.executable, "-m", "tests.integration.egress_netns_probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("EGRESS-REPORT ")]
    assert proc.returncode == 0 and lines, f"probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("EGRESS-REPORT "))
    return result


def _cases(report: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    cases = [c for c in report["results"] if c["mode"] == mode]
    assert cases, mode
    return cases


def _assert_all_pass(cases: list[dict[str, Any]]) -> None:
    failed = [c for c in cases if not c["pass"]]
    assert not failed, json.dumps(failed, indent=1)


def test_namespace_has_no_way_out(report: dict[str, Any]) -> None:
    assert report["routes"].strip() == ""  # only the namespace's loopback: nothing can leave


def test_production_refuses_every_private_address_and_spelling(report: dict[str, Any]) -> None:
    cases = _cases(report, "production")
    refused = [c for c in cases if not c["expect_dialed"]]
    labels = " ".join(c["case"] for c in refused)
    for what in ("10.1.2.3", "172.17.0.5", "192.168.7.7", "100.64.1.1", "fd00::7", "fc00::7", "127.0.0.1"):
        assert f"a2a {what}" in labels and f"transcript {what}" in labels
    for form in ("integer", "hex", "octal", "IPv4-mapped", "inward.test", "public at check time"):
        assert form in labels
    _assert_all_pass(refused)


def test_server_assigned_addresses_are_dialed_in_production(report: dict[str, Any]) -> None:
    cases = [c for c in _cases(report, "production") if "assigned" in c["case"]]
    assert len(cases) == 4
    _assert_all_pass(cases)


def test_allow_list_opens_exactly_its_cidrs(report: dict[str, Any]) -> None:
    _assert_all_pass(_cases(report, "production+allow"))


@pytest.mark.parametrize("mode", ["open", "dev"])
def test_open_and_dev_modes_allow_loopback_only(report: dict[str, Any], mode: str) -> None:
    _assert_all_pass(_cases(report, mode))


def test_saas_keeps_the_sibling_vpc_rule(report: dict[str, Any]) -> None:
    _assert_all_pass(_cases(report, "saas"))
