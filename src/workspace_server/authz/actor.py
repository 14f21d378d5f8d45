"""Who is calling: the named actors of the caller-authorization layer, and the one rule table.

Pure data and pure functions (no database, no web framework), so the rule can be read and tested alone.
Modelled on Coder's `dbauthz`: a request is first resolved to an `Actor` (authz/__init__.py), then one
table (`may_act_for`) says whether that actor may act for a given workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

# The `kind` strings are the ones route handlers and services have always compared (`auth.kind ==
# "admin_token"`), so an Actor is a drop-in for the former `auth.deps.AuthInfo`.
OPEN = "open"  # open bootstrap: no token exists yet and ADMIN_TOKEN is unset (AdminAuth, CanvasOrBearer)
DEV = "dev"  # MOLECULE_ENV=development without ADMIN_TOKEN: routes fail open
ADMIN = "admin_token"  # the ADMIN_TOKEN setting, compared in constant time
ORG = "org_token"  # a live org API token
WORKSPACE = "workspace_token"  # a live token of `workspace_id`
SESSION = "session"  # a control-plane session cookie of this tenant's org
CANVAS = "canvas"  # the canvas: same-origin behind CANVAS_PROXY_URL, or an allowed Origin in bootstrap
BOOTSTRAP = "bootstrap"  # a workspace with no live token yet, let in by the grandfather rule
ANONYMOUS = "anonymous"  # no credential at all
UNKNOWN = "unknown"  # a bearer was presented and matched nothing (a different 401 message than none)

# Actors that may act for every workspace (WorkspaceAuth lets each of them in for any `:id`).
_ANY_WORKSPACE = frozenset({OPEN, DEV, ADMIN, ORG, SESSION, CANVAS})
# Actors bound to one workspace: only for that one.
_OWN_WORKSPACE = frozenset({WORKSPACE, BOOTSTRAP})


@dataclass(frozen=True)
class Actor:
    kind: str
    workspace_id: str | None = None
    org_token_id: str | None = None
    org_token_prefix: str | None = None
    org_id: str | None = None

    # the actors that carry no data, shared
    OPEN: ClassVar[Actor]
    DEV: ClassVar[Actor]
    ADMIN: ClassVar[Actor]
    SESSION: ClassVar[Actor]
    CANVAS: ClassVar[Actor]
    ANONYMOUS: ClassVar[Actor]
    UNKNOWN: ClassVar[Actor]

    @staticmethod
    def workspace(ws_id: str) -> Actor:
        return Actor(WORKSPACE, workspace_id=ws_id)

    @staticmethod
    def bootstrap(ws_id: str) -> Actor:
        return Actor(BOOTSTRAP, workspace_id=ws_id)

    @staticmethod
    def org(token_id: str, prefix: str, org_id: str | None) -> Actor:
        return Actor(ORG, org_token_id=token_id, org_token_prefix=prefix, org_id=org_id)

    @property
    def authenticated(self) -> bool:
        return self.kind not in (ANONYMOUS, UNKNOWN)


Actor.OPEN = Actor(OPEN)
Actor.DEV = Actor(DEV)
Actor.ADMIN = Actor(ADMIN)
Actor.SESSION = Actor(SESSION)
Actor.CANVAS = Actor(CANVAS)
Actor.ANONYMOUS = Actor(ANONYMOUS)
Actor.UNKNOWN = Actor(UNKNOWN)


def may_act_for(actor: Actor, ws_id: str) -> bool:
    """The rule table: operator-class actors act for every workspace, a workspace actor for its own only."""
    if actor.kind in _ANY_WORKSPACE:
        return True
    if actor.kind in _OWN_WORKSPACE:
        return actor.workspace_id == ws_id
    return False


@dataclass(frozen=True)
class Credentials:
    """What a request presents, read from its headers once (HTTP and WebSocket alike)."""

    bearer: str = ""  # `Authorization: Bearer <tok>`, remainder trimmed; anything else is ""
    authorization: str = ""  # the raw header (the test-token hatch reads it without trimming)
    cookie: str = ""
    host: str = ""
    referer: str = ""
    origin: str = ""

    @staticmethod
    def from_headers(headers: Mapping[str, str]) -> Credentials:
        raw = headers.get("authorization", "")
        # case-sensitive prefix, as the reference (common/http.bearer_token reads it the same way)
        bearer = raw[len("Bearer ") :].strip() if raw.startswith("Bearer ") else ""
        return Credentials(
            bearer=bearer,
            authorization=raw,
            cookie=headers.get("cookie", ""),
            host=headers.get("host", ""),
            referer=headers.get("referer", ""),
            origin=headers.get("origin", ""),
        )
