"""The caller-authorization layer (workspace_server.authz): the rule table, actor resolution, and the one
DB-failure behaviour (fail closed: 503 platform_unavailable, never "allowed"), for every rule, every kind
of credential, own and other workspace, and a database that is up or down."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import free_port, make_settings
from workspace_server import authz
from workspace_server.auth.tokens import hash_token, issue_workspace_token
from workspace_server.authz import Actor, Credentials, Source, may_act_for
from workspace_server.authz import actor as kinds
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import new_id
from workspace_server.db.engine import autocommit, make_engine
from workspace_server.db.schema import metadata, org_api_tokens, workspaces

ADMIN = "admin-secret-for-authz-tests"
ORG_TOKEN = "org-token-for-authz-tests"
OWN, OTHER, TOKENLESS = new_id(), new_id(), new_id()

# ---------------------------------------------------------------- the rule table (pure)

ANY_WS = [Actor.OPEN, Actor.DEV, Actor.ADMIN, Actor.SESSION, Actor.CANVAS, Actor.org("t", "p", None)]


@pytest.mark.parametrize("actor", ANY_WS, ids=lambda a: a.kind)
@pytest.mark.parametrize("ws", [OWN, OTHER])
def test_operator_actors_act_for_every_workspace(actor: Actor, ws: str) -> None:
    assert may_act_for(actor, ws)


@pytest.mark.parametrize("make", [Actor.workspace, Actor.bootstrap], ids=["workspace", "bootstrap"])
def test_workspace_actors_act_for_their_own_workspace_only(make: Callable[[str], Actor]) -> None:
    assert may_act_for(make(OWN), OWN)
    assert not may_act_for(make(OWN), OTHER)


@pytest.mark.parametrize("actor", [Actor.ANONYMOUS, Actor.UNKNOWN], ids=lambda a: a.kind)
@pytest.mark.parametrize("ws", [OWN, OTHER])
def test_unauthenticated_actors_act_for_none(actor: Actor, ws: str) -> None:
    assert not may_act_for(actor, ws)
    with pytest.raises(ApiError) as err:
        authz.require(actor, ws)
    assert err.value.status == 401
    expected = "missing workspace auth token" if actor is Actor.ANONYMOUS else "invalid workspace auth token"
    assert err.value.body == {"error": expected}


def test_kind_strings_are_the_former_auth_info_kinds() -> None:
    # handlers compare these strings (auth.kind == "admin_token"): they must not drift
    assert (Actor.ADMIN.kind, Actor.org("t", "p", None).kind, Actor.workspace(OWN).kind) == (
        "admin_token",
        "org_token",
        "workspace_token",
    )
    assert {Actor.OPEN.kind, Actor.DEV.kind, Actor.SESSION.kind, Actor.CANVAS.kind} == {
        "open",
        "dev",
        "session",
        "canvas",
    }


def test_credentials_from_headers() -> None:
    c = Credentials.from_headers(
        {"authorization": "Bearer  tok ", "cookie": "s=1", "host": "h", "origin": "o"}
    )
    assert (c.bearer, c.authorization, c.cookie, c.host, c.origin, c.referer) == (
        "tok",
        "Bearer  tok ",
        "s=1",
        "h",
        "o",
        "",
    )
    assert Credentials.from_headers({"authorization": "bearer tok"}).bearer == ""  # case-sensitive prefix
    assert Credentials.from_headers({"authorization": "Basic x"}).bearer == ""


def test_same_origin_canvas_needs_the_proxy_setting(tmp_path: Path) -> None:
    creds = Credentials(host="tenant.example", referer="https://tenant.example/canvas")
    off = make_settings("sqlite:///x.db", tmp_path)
    on = make_settings("sqlite:///x.db", tmp_path, CANVAS_PROXY_URL="http://canvas:3000")
    assert not authz.is_same_origin_canvas(off, creds)
    assert authz.is_same_origin_canvas(on, creds)
    assert authz.is_same_origin_canvas(on, Credentials(host="tenant.example", origin="http://tenant.example"))
    assert not authz.is_same_origin_canvas(
        on, Credentials(host="tenant.example", referer="https://evil.test/")
    )
    assert not authz.is_same_origin_canvas(
        on, Credentials(host="tenant.example", referer="https://tenant.example.evil.test/")
    )


def test_test_token_hatch(tmp_path: Path) -> None:
    prod = make_settings("sqlite:///x.db", tmp_path, ADMIN_TOKEN=ADMIN)
    assert authz.test_token_caller_ok(prod, f"Bearer {ADMIN}")
    assert not authz.test_token_caller_ok(prod, f"Bearer {ADMIN} ")  # the raw header, not trimmed
    assert not authz.test_token_caller_ok(prod, "Bearer ")
    assert not authz.test_token_caller_ok(prod, "")
    assert authz.test_token_caller_ok(make_settings("sqlite:///x.db", tmp_path), "")


# ---------------------------------------------------------------- against a database, up and down


class World(SimpleNamespace):
    own_token: str
    other_token: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A SQLite database with three workspaces: OWN and OTHER hold a live token, TOKENLESS none; one org
    token. Contexts are made per mode over it, and over a database that refuses every connection."""
    engine = make_engine(f"sqlite:///{tmp_path / 'authz.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for ws in (OWN, OTHER, TOKENLESS):
            await conn.execute(sa.insert(workspaces).values(id=ws, name=ws[:8], status="online"))
        own_token = await issue_workspace_token(conn, OWN)
        other_token = await issue_workspace_token(conn, OTHER)
        await conn.execute(
            sa.insert(org_api_tokens).values(
                id=new_id(), token_hash=hash_token(ORG_TOKEN), prefix=ORG_TOKEN[:8], name="t"
            )
        )
    down = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/unreachable")
    yield World(engine=engine, down=down, tmp_path=tmp_path, own_token=own_token, other_token=other_token)
    await engine.dispose()
    await down.dispose()


MODES = {
    "production": {"ADMIN_TOKEN": ADMIN},
    "open-bootstrap": {},
    "dev": {"MOLECULE_ENV": "development"},
}


def make_ctx(world: World, mode: str, db_up: bool) -> Any:
    engine = world.engine if db_up else world.down
    settings = make_settings("sqlite:///unused.db", world.tmp_path, **MODES[mode])
    return SimpleNamespace(settings=settings, engine=engine, autocommit=autocommit(engine), http=None)


def bearers(world: World) -> dict[str, str]:
    return {
        "none": "",
        "admin": ADMIN,
        "org": ORG_TOKEN,
        "own": world.own_token,
        "other": world.other_token,
        "garbage": "not-a-token",
    }


async def outcome(call: Awaitable[Actor]) -> str:
    """`<kind>[:<workspace>]` when let in, `<status> <message>` when refused."""
    try:
        actor = await call
    except ApiError as err:
        return f"{err.status} {err.body.get('error')}"
    return actor.kind + (f":{actor.workspace_id}" if actor.workspace_id else "")


RULES: dict[str, Callable[[Any, Credentials, str], Awaitable[Actor]]] = {
    "workspace_actor": lambda ctx, c, ws: authz.workspace_actor(ctx, c, ws),
    "admin_actor": lambda ctx, c, ws: authz.admin_actor(ctx, c),
    "canvas_actor": lambda ctx, c, ws: authz.canvas_actor(ctx, c),
    "registry_actor": lambda ctx, c, ws: authz.registry_actor(ctx, c, ws),
    "token_holder/always": lambda ctx, c, ws: authz.token_holder(ctx, c, ws, tokenless="always"),
    "token_holder/open_bootstrap": lambda ctx, c, ws: authz.token_holder(
        ctx, c, ws, tokenless="open_bootstrap"
    ),
    "discovery_actor": lambda ctx, c, ws: authz.discovery_actor(ctx, c, ws),
    "a2a_actor/caller": lambda ctx, c, ws: authz.a2a_actor(ctx, c, OTHER, ws, missing="m", invalid="i"),
    "a2a_actor/canvas": lambda ctx, c, ws: authz.a2a_actor(ctx, c, ws, "", missing="m", invalid="i"),
    "download_actor": lambda ctx, c, ws: authz.download_actor(ctx, Actor.org("t", "p", None), ws),
}

UNAVAILABLE = "503 platform datastore unavailable — retry shortly"


async def test_db_down_never_allows_what_db_up_denies(world: World) -> None:
    """Every rule × mode × credential × workspace (own, other, tokenless): with the database down the
    answer is the 503, or exactly the DB-up answer (a decision that needed no lookup, such as ADMIN_TOKEN
    in WorkspaceAuth or a missing bearer)."""
    seen_503 = 0
    for (name, rule), mode, (cred, bearer), ws in itertools.product(
        RULES.items(), MODES, bearers(world).items(), (OWN, OTHER, TOKENLESS)
    ):
        creds = Credentials(bearer=bearer)
        up = await outcome(rule(make_ctx(world, mode, True), creds, ws))
        down = await outcome(rule(make_ctx(world, mode, False), creds, ws))
        assert down in (up, UNAVAILABLE), (name, mode, cred, ws, up, down)
        seen_503 += down == UNAVAILABLE
    assert seen_503 > 100  # the broken database was really consulted


# What each rule answers in production mode (ADMIN_TOKEN set), DB up, for the workspace OWN (which holds
# a live token) and TOKENLESS: the table the routes' integration tests pin, in one place.
WS_TOKEN_401 = "401 invalid workspace auth token"
WS_MISSING_401 = "401 missing workspace auth token"
PRODUCTION: dict[tuple[str, str], dict[str, str]] = {
    ("workspace_actor", OWN): {
        "none": WS_MISSING_401,
        "admin": "admin_token",
        "org": "org_token",
        "own": f"workspace_token:{OWN}",
        "other": WS_TOKEN_401,
        "garbage": WS_TOKEN_401,
    },
    ("registry_actor", OWN): {
        "none": WS_MISSING_401,
        "admin": WS_TOKEN_401,  # the workspace has a token: only its own passes
        "org": WS_TOKEN_401,
        "own": f"workspace_token:{OWN}",
        "other": WS_TOKEN_401,
        "garbage": WS_TOKEN_401,
    },
    ("registry_actor", TOKENLESS): {
        "none": WS_MISSING_401,
        "admin": "admin_token",  # production: an admin credential may act for a tokenless workspace
        "org": "org_token",
        "own": WS_TOKEN_401,
        "other": WS_TOKEN_401,
        "garbage": WS_TOKEN_401,
    },
    ("token_holder/always", TOKENLESS): dict.fromkeys(
        ("none", "admin", "org", "own", "other", "garbage"), f"bootstrap:{TOKENLESS}"
    ),
    ("token_holder/open_bootstrap", TOKENLESS): {
        "none": WS_MISSING_401,
        "admin": WS_TOKEN_401,
        "org": WS_TOKEN_401,
        "own": WS_TOKEN_401,
        "other": WS_TOKEN_401,
        "garbage": WS_TOKEN_401,
    },
    ("admin_actor", OWN): {
        "none": "401 admin auth required",
        "admin": "admin_token",
        "org": "org_token",
        "own": "401 invalid admin auth token",  # with ADMIN_TOKEN set a workspace token is no admin
        "other": "401 invalid admin auth token",
        "garbage": "401 invalid admin auth token",
    },
    ("canvas_actor", OWN): {
        "none": "401 admin auth required",
        "admin": "admin_token",
        "org": "401 invalid admin auth token",  # CanvasOrBearer never accepted org tokens
        "own": f"workspace_token:{OWN}",
        "other": f"workspace_token:{OTHER}",
        "garbage": "401 invalid admin auth token",
    },
}


@pytest.mark.parametrize(("rule", "ws"), list(PRODUCTION), ids=lambda v: v if len(v) > 20 else "")
async def test_production_rule_table(world: World, rule: str, ws: str) -> None:
    ctx = make_ctx(world, "production", True)
    got = {
        cred: await outcome(RULES[rule](ctx, Credentials(bearer=b), ws)) for cred, b in bearers(world).items()
    }
    assert got == PRODUCTION[(rule, ws)]


async def test_open_bootstrap_grandfathers_tokenless_workspaces(world: World) -> None:
    ctx = make_ctx(world, "open-bootstrap", True)
    for rule in ("registry_actor", "token_holder/open_bootstrap", "discovery_actor"):
        assert await outcome(RULES[rule](ctx, Credentials(), TOKENLESS)) == f"bootstrap:{TOKENLESS}", rule
        assert await outcome(RULES[rule](ctx, Credentials(), OWN)) == WS_MISSING_401, rule
    # a2a: a workspace calling itself and the header-less canvas need nothing in open bootstrap
    assert await outcome(authz.a2a_actor(ctx, Credentials(), OWN, OWN, missing="m", invalid="i")) == (
        f"bootstrap:{OWN}"
    )
    assert await outcome(authz.a2a_actor(ctx, Credentials(), OWN, "", missing="m", invalid="i")) == "canvas"


async def test_resolve_bearer_order_and_binding(world: World) -> None:
    ctx = make_ctx(world, "production", True)
    everything = (Source.ADMIN, Source.ORG, Source.WORKSPACE)
    assert await authz.resolve_bearer(ctx, "", everything) is Actor.ANONYMOUS
    assert await authz.resolve_bearer(ctx, "nope", everything) is Actor.UNKNOWN
    assert await authz.resolve_bearer(ctx, ADMIN, everything) is Actor.ADMIN
    org = await authz.resolve_bearer(ctx, ORG_TOKEN, everything)
    assert (org.kind, org.org_token_prefix) == (kinds.ORG, ORG_TOKEN[:8])
    assert await authz.resolve_bearer(ctx, world.own_token, everything) == Actor.workspace(OWN)
    # a token bound to another workspace is no one; the sources not listed are not consulted
    assert await authz.resolve_bearer(ctx, world.own_token, everything, bound_to=OTHER) is Actor.UNKNOWN
    assert await authz.resolve_bearer(ctx, ORG_TOKEN, (Source.ADMIN, Source.WORKSPACE)) is Actor.UNKNOWN
    # ADMIN_TOKEN unset: the admin source matches nothing, not even an empty secret
    bootstrap = make_ctx(world, "open-bootstrap", True)
    assert await authz.resolve_bearer(bootstrap, ADMIN, (Source.ADMIN,)) is Actor.UNKNOWN


async def test_resolve_bearer_stops_at_the_first_match(world: World) -> None:
    # with the database down, a match that needs no lookup (ADMIN_TOKEN first) still resolves
    down = make_ctx(world, "production", False)
    assert await authz.resolve_bearer(down, ADMIN, (Source.ADMIN, Source.ORG)) is Actor.ADMIN
    with pytest.raises(ApiError) as err:
        await authz.resolve_bearer(down, ADMIN, (Source.ORG, Source.ADMIN))
    assert (err.value.status, err.value.body.get("code")) == (503, "platform_unavailable")


async def test_claimed_caller(world: World) -> None:
    ctx = make_ctx(world, "production", True)
    ws_actor = Actor.workspace(OWN)
    await authz.claimed_caller(ctx, Credentials(), ws_actor, OTHER)  # no bearer: the token part is skipped
    await authz.claimed_caller(ctx, Credentials(bearer=ORG_TOKEN), Actor.org("t", "p", None), OTHER)
    await authz.claimed_caller(ctx, Credentials(bearer=world.other_token), ws_actor, OTHER)
    for caller in (OTHER, None):
        with pytest.raises(ApiError) as err:
            await authz.claimed_caller(ctx, Credentials(bearer=world.own_token), ws_actor, caller)
        assert err.value.body == {"error": "invalid token for claimed workspace"}


def test_batch_denial(tmp_path: Path) -> None:
    prod = make_settings("sqlite:///x.db", tmp_path, ADMIN_TOKEN=ADMIN)
    boot = make_settings("sqlite:///x.db", tmp_path)
    assert authz.heartbeat_batch_strict(prod) and not authz.heartbeat_batch_strict(boot)
    assert authz.batch_denial(prod, Credentials(bearer="x")) is None  # maybe an admin: decided per step
    for settings, creds in ((prod, Credentials()), (boot, Credentials()), (boot, Credentials(bearer="x"))):
        denial = authz.batch_denial(settings, creds)
        assert denial is not None and denial.status == 401


async def test_a_lookup_error_that_is_no_outage_is_a_500_never_an_allow(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workspace_server.auth import tokens

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug, not an outage")

    ctx = make_ctx(world, "open-bootstrap", True)
    monkeypatch.setattr(tokens, "has_live_token", broken)
    monkeypatch.setattr(tokens, "validate_workspace_token", broken)
    for rule in RULES.values():
        got = await outcome(rule(ctx, Credentials(bearer=world.own_token), TOKENLESS))
        assert got in ("500 auth check failed", "canvas"), got  # a2a's header-less canvas needs no lookup
