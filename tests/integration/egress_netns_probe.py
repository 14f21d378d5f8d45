"""Run inside a fresh network + mount namespace (`unshare -nm`): real listeners on private addresses, the
server's egress decisions against them. Prints one JSON report on stdout. Driven by test_egress_netns.py.

Set-up: the namespace's own loopback device carries 10.1.2.3, 172.17.0.5, 192.168.7.7, 100.64.1.1,
fd00::7 and fc00::7 (the dummy interface type is not available); /etc/hosts is bind-mounted (in this
mount namespace only) so that `inward.test` resolves to 10.1.2.3 through the ordinary resolver. An HTTP
listener on every one of those addresses (same port) counts what reaches it. No packet leaves the
namespace: it has no other interface.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

V4 = ["10.1.2.3", "172.17.0.5", "192.168.7.7", "100.64.1.1"]
V6 = ["fd00::7", "fc00::7"]
NAME = "inward.test"  # -> 10.1.2.3 through /etc/hosts


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def setup_namespace(tmp: Path) -> None:
    sh("ip", "link", "set", "lo", "up")
    for a in V4:
        sh("ip", "addr", "add", f"{a}/32", "dev", "lo")
    for a in V6:
        sh("ip", "-6", "addr", "add", f"{a}/128", "dev", "lo", "nodad")
    hosts = tmp / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.1.2.3 {NAME}\n")
    sh("mount", "--make-rprivate", "/")
    sh("mount", "--bind", str(hosts), "/etc/hosts")


class Hits:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_addr: dict[str, int] = {}

    def add(self, addr: str) -> None:
        with self.lock:
            self.by_addr[addr] = self.by_addr.get(addr, 0) + 1

    def total(self) -> int:
        with self.lock:
            return sum(self.by_addr.values())


def listener(addr: str, port: int, hits: Hits) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            return None

        def _reply(self, body: bytes) -> None:
            hits.add(addr)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(json.dumps({"lines": [f"transcript from {addr}"]}).encode())

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rid = json.loads(raw).get("id") if raw else None
            self._reply(json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"from": addr}}).encode())

    family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    srv = Server((addr, port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def url(addr: str, port: int) -> str:
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


async def run(tmp: Path) -> dict[str, Any]:
    import httpx
    from asgi_lifespan import LifespanManager

    from workspace_server import egress
    from workspace_server.app import create_app
    from workspace_server.auth.tokens import issue_workspace_token
    from workspace_server.common.ids import new_id
    from workspace_server.config import Settings
    from workspace_server.egress.clients import guarded_connector
    from workspace_server.workspaces.store import insert_workspace

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    hits = Hits()
    servers = [listener(a, port, hits) for a in [*V4, *V6, "127.0.0.1"]]
    results: list[dict[str, Any]] = []
    apps: list[LifespanManager] = []

    async def app(tag: str, **env: str) -> tuple[Any, httpx.AsyncClient]:
        base = {
            "DATABASE_URL": f"sqlite:///{tmp}/{tag}.db",
            "DATA_DIR": str(tmp / f"data-{tag}"),
            "CONFIGS_DIR": str(tmp / "configs"),
            "WORKSPACE_BACKEND": "none",
            "REDIS_URL": "",
            "MOLECULE_ENV": "",
            "ADMIN_TOKEN": "",
            "MOLECULE_DEPLOY_MODE": "",
            "MOLECULE_ORG_ID": "",
            "RATE_LIMIT": "100000",
        }
        base.update(env)
        application = create_app(Settings(**base))  # type: ignore[arg-type]
        mgr = LifespanManager(application, startup_timeout=30)
        await mgr.__aenter__()
        apps.append(mgr)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mgr.app, client=("127.0.0.1", 40000)), base_url="http://t"
        )
        return application.state.ctx, client

    async def workspace(ctx: Any, target: str, card_url: str | None = None) -> tuple[str, str]:
        ws = new_id()
        async with ctx.engine.begin() as conn:
            await insert_workspace(
                conn, id=ws, name="w", status="online", url=target, agent_card={"url": card_url or target}
            )
            token = await issue_workspace_token(conn, ws)
        return ws, token

    async def check(
        mode: str, case: str, expect_ok: bool, fn: Callable[[], Awaitable[tuple[bool, str]]]
    ) -> None:
        before = hits.total()
        try:
            ok, detail = await fn()
        except Exception as exc:  # reported, not raised: the test shows every case
            ok, detail = False, f"raised {exc!r}"
        reached = hits.total() - before
        results.append(
            {
                "mode": mode,
                "case": case,
                "expect_dialed": expect_ok,
                "ok_reply": ok,
                "listener_hits": reached,
                "detail": detail,
                "pass": ok == expect_ok and reached == (1 if expect_ok else 0),
            }
        )

    Probe = Callable[[], Awaitable[tuple[bool, str]]]

    def a2a(ctx: Any, target: str) -> Probe:
        async def go() -> tuple[bool, str]:
            ws, _ = await workspace(ctx, target)
            body = json.dumps({"method": "message/send", "params": {"message": {"parts": []}}}).encode()
            r = await ctx.a2a.proxy(ws, body)
            return r.status == 200, f"a2a {r.status} {r.error or ''}"

        return go

    def transcript(
        ctx: Any, client: httpx.AsyncClient, target: str
    ) -> Callable[[], Awaitable[tuple[bool, str]]]:
        async def go() -> tuple[bool, str]:
            ws, token = await workspace(ctx, "", target)
            r = await client.get(f"/workspaces/{ws}/transcript", headers={"Authorization": f"Bearer {token}"})
            return r.status_code == 200, f"transcript {r.status_code} {r.text[:100]}"

        return go

    private = {a: url(a, port) for a in [*V4, *V6]}
    spellings = {
        "10.1.2.3 as integer": f"http://167838211:{port}",
        "10.1.2.3 as hex": f"http://0x0a010203:{port}",
        "10.1.2.3 as octal": f"http://012.01.02.03:{port}",
        "10.1.2.3 IPv4-mapped": f"http://[::ffff:10.1.2.3]:{port}",
        f"{NAME} (name -> 10.1.2.3)": f"http://{NAME}:{port}",
    }
    loopback = url("127.0.0.1", port)

    # production: every private address and spelling refused, loopback too; nothing reaches a listener
    ctx, client = await app("prod", ADMIN_TOKEN="adm")
    for label, target in [*private.items(), *spellings.items(), ("127.0.0.1", loopback)]:
        await check("production", f"a2a {label}", False, a2a(ctx, target))
        await check("production", f"transcript {label}", False, transcript(ctx, client, target))

    # the connect-time checks on their own: the guarded httpx client and aiohttp connector, by name
    async def httpx_by_name() -> tuple[bool, str]:
        try:
            r = await ctx.http.get(f"http://{NAME}:{port}/")
        except httpx.HTTPError as exc:
            return False, f"ctx.http refused: {exc}"
        return r.status_code == 200, f"ctx.http {r.status_code}"

    async def aiohttp_by_name() -> tuple[bool, str]:
        import aiohttp

        async with aiohttp.ClientSession(connector=guarded_connector(egress.policy_for(ctx.settings))) as s:
            try:
                async with s.get(f"http://{NAME}:{port}/") as r:
                    return r.status == 200, f"aiohttp {r.status}"
            except aiohttp.ClientError as exc:
                return False, f"aiohttp refused: {exc}"

    async def rebinding_transcript() -> tuple[bool, str]:
        # the check before the call sees a public answer (as a rebinding DNS server would give first);
        # the connection then resolves inward.test for real and is refused before it is opened
        real = egress.policy.resolve

        async def public(host: str) -> list[Any]:
            return [egress.policy.ip_literal("93.184.215.14")]

        egress.policy.resolve = public  # type: ignore[assignment]
        try:
            return await transcript(ctx, client, f"http://{NAME}:{port}")()
        finally:
            egress.policy.resolve = real  # type: ignore[assignment]

    await check("production", f"transcript {NAME}, public at check time", False, rebinding_transcript)
    await check("production", f"ctx.http GET {NAME}", False, httpx_by_name)
    await check("production", f"guarded aiohttp GET {NAME}", False, aiohttp_by_name)

    def aiohttp_literal(target: str) -> Probe:
        async def go() -> tuple[bool, str]:  # no pre-check: the connector's socket factory decides
            import aiohttp

            connector = guarded_connector(egress.policy_for(ctx.settings))
            async with aiohttp.ClientSession(connector=connector) as s:
                try:
                    async with s.get(target) as r:
                        return r.status == 200, f"aiohttp {r.status}"
                except aiohttp.ClientError as exc:
                    return False, f"aiohttp refused: {exc}"

        return go

    for label in ("10.1.2.3", "172.17.0.5", "fd00::7"):
        await check(
            "production", f"guarded aiohttp GET literal {label}", False, aiohttp_literal(private[label])
        )

    def agent_client_post(target: str) -> Probe:
        async def go() -> tuple[bool, str]:  # no pre-check: the A2A client's connect-time check decides
            from workspace_server.a2a.pool import a2a_client
            from workspace_server.a2a.transport import Reply, TransportError

            reply = Reply()
            try:
                await a2a_client(ctx).post(target, b"{}", reply)
            except TransportError as exc:
                return False, f"a2a client refused: {exc}"
            return reply.status == 200, f"a2a client {reply.status}"

        return go

    await check("production", f"a2a client POST {NAME}", False, agent_client_post(f"http://{NAME}:{port}/"))
    for label in ("10.1.2.3", "172.17.0.5", "fd00::7"):
        await check(
            "production", f"a2a client POST literal {label}", False, agent_client_post(private[label])
        )

    # server-assigned: the backend's record (not the agent's claim) opens exactly that URL for that workspace
    ctx.provisioner = object()
    for addr in ("172.17.0.5", "127.0.0.1"):
        target = url(addr, port)

        async def assigned_a2a(target: str = target) -> tuple[bool, str]:
            ws, token = await workspace(ctx, target, card_url=private["192.168.7.7"])
            egress.assigned(ctx).record(ws, target)
            body = json.dumps({"method": "message/send", "params": {"message": {"parts": []}}}).encode()
            r = await ctx.a2a.proxy(ws, body)
            t = await client.get(f"/workspaces/{ws}/transcript", headers={"Authorization": f"Bearer {token}"})
            return r.status == 200 and t.status_code == 200, f"a2a {r.status} transcript {t.status_code}"

        before = hits.by_addr.get(addr, 0)
        await check("production", f"server-assigned {addr} (card says 192.168.7.7)", True, assigned_a2a)
        # both calls reached the assigned address, none the card's
        results[-1]["listener_hits"] = hits.by_addr.get(addr, 0) - before
        results[-1]["pass"] = results[-1]["ok_reply"] and results[-1]["listener_hits"] == 2
        results[-1]["card_address_hits"] = hits.by_addr.get("192.168.7.7", 0)
        results[-1]["pass"] = results[-1]["pass"] and hits.by_addr.get("192.168.7.7", 0) == 0

    async def stopped_assigned() -> tuple[bool, str]:  # the row's url was cleared when the agent stopped
        target = private["172.17.0.5"]
        ws, token = await workspace(ctx, "", card_url=target)
        egress.assigned(ctx).record(ws, target)
        body = json.dumps({"method": "message/send", "params": {"message": {"parts": []}}}).encode()
        r = await ctx.a2a.proxy(ws, body)
        t = await client.get(f"/workspaces/{ws}/transcript", headers={"Authorization": f"Bearer {token}"})
        return r.status == 200 or t.status_code == 200, f"a2a {r.status} transcript {t.status_code}"

    await check("production", "172.17.0.5 assigned, agent stopped (row url cleared)", False, stopped_assigned)

    async def claimed_assigned() -> tuple[bool, str]:  # another workspace's record does not count
        ws, _ = await workspace(ctx, private["172.17.0.5"])
        egress.assigned(ctx).record(new_id(), private["172.17.0.5"])
        body = json.dumps({"method": "message/send", "params": {"message": {"parts": []}}}).encode()
        r = await ctx.a2a.proxy(ws, body)
        return r.status == 200, f"a2a {r.status}"

    await check("production", "172.17.0.5 assigned to another workspace", False, claimed_assigned)

    # EGRESS_ALLOW_CIDRS opens what it lists, and only that
    ctx, client = await app("allow", ADMIN_TOKEN="adm", EGRESS_ALLOW_CIDRS="10.1.2.3/32, fd00::/8")
    for label, target, expect in [
        ("10.1.2.3", private["10.1.2.3"], True),
        (f"{NAME} (name -> 10.1.2.3)", f"http://{NAME}:{port}", True),
        ("fd00::7", private["fd00::7"], True),
        ("172.17.0.5", private["172.17.0.5"], False),
        ("fc00::7", private["fc00::7"], False),
        ("127.0.0.1", loopback, False),
    ]:
        await check("production+allow", f"a2a {label}", expect, a2a(ctx, target))
        await check("production+allow", f"transcript {label}", expect, transcript(ctx, client, target))

    # an entry with a port opens that port only
    with socket.socket() as s2:
        s2.bind(("127.0.0.1", 0))
        other_port = int(s2.getsockname()[1])
    servers.append(listener("10.1.2.3", other_port, hits))
    ctx, client = await app("allow-port", ADMIN_TOKEN="adm", EGRESS_ALLOW_CIDRS=f"10.1.2.3/32:{port}")
    await check(
        "production+allow", f"a2a 10.1.2.3 (entry 10.1.2.3/32:{port})", True, a2a(ctx, private["10.1.2.3"])
    )
    other = f"http://10.1.2.3:{other_port}"
    await check("production+allow", "a2a 10.1.2.3 at another port", False, a2a(ctx, other))
    await check(
        "production+allow", "transcript 10.1.2.3 at another port", False, transcript(ctx, client, other)
    )

    # open bootstrap mode (and dev): loopback yes, private no
    for mode, env in (("open", {}), ("dev", {"MOLECULE_ENV": "development"})):
        ctx, client = await app(mode, **env)
        await check(mode, "a2a 127.0.0.1", True, a2a(ctx, loopback))
        await check(mode, "transcript 127.0.0.1", True, transcript(ctx, client, loopback))
        for label in ("10.1.2.3", "192.168.7.7", "100.64.1.1", "fd00::7"):
            await check(mode, f"a2a {label}", False, a2a(ctx, private[label]))
            await check(mode, f"transcript {label}", False, transcript(ctx, client, private[label]))

    # SaaS keeps the reference's sibling-VPC rule: RFC 1918 and fd00::/8, never CGNAT or fc00::/8
    ctx, client = await app("saas", ADMIN_TOKEN="adm", MOLECULE_DEPLOY_MODE="saas")
    for label, expect in (("10.1.2.3", True), ("fd00::7", True), ("100.64.1.1", False), ("fc00::7", False)):
        await check("saas", f"a2a {label}", expect, a2a(ctx, private[label]))
    await check("saas", "a2a 127.0.0.1", False, a2a(ctx, loopback))

    for mgr in reversed(apps):
        await mgr.__aexit__(None, None, None)
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    return {"port": port, "results": results}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="egress-netns-"))
    setup_namespace(tmp)
    # nothing but the namespace's loopback exists here: no route out
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    report = asyncio.run(run(tmp))
    report["routes"] = routes
    sys.stdout.write("EGRESS-REPORT " + json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
