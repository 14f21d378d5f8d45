"""The two reverse proxies of the reference (spec 06 §1.4), streaming on the shared httpx client.

- **Control plane** (`CP_UPSTREAM_URL`): `/cp/*` on an allow-list of paths (the canvas's auth, billing,
  legal, orgs and templates calls); everything else under `/cp/` is a 404 that never reaches upstream
  (the CP's admin, tenant-bootstrap, provisioning and internal routes must not be reachable through a
  tenant). The CP session cookie passes (it is the point); `Authorization` does not (docs/decisions.md
  "Reverse proxies": the bearer a browser sends here is ours, the admin or a workspace token).
- **Canvas** (`CANVAS_PROXY_URL`): every path no route matched, so the canvas is served from the same
  origin as the API. `Authorization` and `Cookie` are removed (#451: the canvas process never sees a
  credential).

Both: hop-by-hop headers (RFC 9110 §7.6.1, plus every name the `Connection` header lists) dropped both
ways; `Host` is the upstream's; `X-Forwarded-For` is the TCP peer only (no proxy is trusted, so a client's
own value is not passed on); bodies streamed both ways, the response's bytes untouched (`aiter_raw`: its
`Content-Encoding` and `Content-Length` stay true). The upstream is dialed through `ctx.http`, so through
the egress policy like every other outbound call (an operator-configured URL gets no separate trust: a
loopback canvas in production mode needs its `EGRESS_ALLOW_CIDRS` entry, e.g. `127.0.0.1/32:3000`).
Upstream down, refused or timing out → 502 with the reference's plain-text body; the reason goes to the
log only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from workspace_server.context import AppContext
from workspace_server.egress import UnsafeURL, parse_url

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed for the upstream request (Host from the URL, length from the body we stream); the client's
# X-Forwarded-* are its own claims, and the server trusts no proxy.
REQUEST_REPLACED = frozenset({"host", "content-length", "x-forwarded-for", "x-forwarded-host", "x-real-ip"})
# One upstream read may wait this long (a slow page render, a long poll); then 502 or a cut stream.
TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=60.0, pool=5.0)
CP_PREFIXES_WITH_SUBPATH = ("/cp/auth/", "/cp/billing/", "/cp/legal/")
CP_EXACT_OR_SUBTREE = ("/cp/orgs", "/cp/templates")


@dataclass(frozen=True)
class Upstream:
    """One proxy's target and rules."""

    base: str  # scheme://host[:port], no trailing slash
    strip: frozenset[str]  # request headers never forwarded (lower-case)
    failure: str  # the 502 body
    name: str  # for the log


def upstream_base(url: str, setting: str) -> str:
    """`scheme://host[:port]` of a configured upstream; ValueError (the server does not start) on a URL
    the egress policy could never dial or that carries a path, query or credentials."""
    try:
        parse_url(url)
    except UnsafeURL as exc:
        raise ValueError(f"{setting}: {exc}") from None
    parsed = httpx.URL(url)
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ValueError(f"{setting}: give only scheme://host[:port]")
    return url.rstrip("/")


def cp_upstream(url: str) -> Upstream:
    base = upstream_base(url, "CP_UPSTREAM_URL")
    return Upstream(base, frozenset({"authorization"}), "control plane unavailable", "cp")


def canvas_upstream(url: str) -> Upstream:
    base = upstream_base(url, "CANVAS_PROXY_URL")
    return Upstream(base, frozenset({"authorization", "cookie"}), "canvas unavailable", "canvas")


def clean_path(path: str) -> bool:
    """No `.`/`..` segment and no backslash in the decoded path: an upstream (or a proxy in front of it)
    that normalised them could turn an allowed `/cp/auth/../admin` into a refused one."""
    if "\\" in path or "\x00" in path:
        return False
    return not any(seg in (".", "..") for seg in path.split("/"))


def cp_path_allowed(path: str) -> bool:
    """The reference's allow-list (its `isCPProxyAllowedPath` table), on a clean decoded path."""
    if not clean_path(path):
        return False
    if any(path.startswith(p) and len(path) > len(p) for p in CP_PREFIXES_WITH_SUBPATH):
        return True
    return any(path == p or path.startswith(p + "/") for p in CP_EXACT_OR_SUBTREE)


RawHeaders = list[tuple[bytes, bytes]]


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    names: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return names


def _drop(headers: Iterable[tuple[bytes, bytes]], names: Iterable[str]) -> RawHeaders:
    """Raw (bytes) headers, so a non-ASCII value passes through unchanged instead of failing to encode."""
    items = list(headers)
    drop = {n.encode() for n in names} | _connection_listed(items)
    return [(k, v) for k, v in items if k.lower() not in drop]


def request_headers(request: Request, up: Upstream) -> RawHeaders:
    out = _drop(request.scope.get("headers") or [], HOP_BY_HOP | REQUEST_REPLACED | up.strip)
    if request.client is not None:
        out.append((b"x-forwarded-for", request.client.host.encode()))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        out.append((b"content-length", length.encode()))
    return out


def response_headers(resp: httpx.Response) -> RawHeaders:
    return [(k.lower(), v) for k, v in _drop(resp.headers.raw, HOP_BY_HOP)]


def _has_body(request: Request) -> bool:
    h = request.headers
    return "transfer-encoding" in h or h.get("content-length", "0") not in ("", "0")


async def forward(ctx: AppContext, request: Request, up: Upstream) -> Response:
    """Send the request on to `up` (same method, raw path and query) and stream the answer back."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string") or b""
    url = httpx.URL(up.base).copy_with(raw_path=raw_path + (b"?" + query if query else b""))
    upstream_req = ctx.http.build_request(
        request.method,
        url,
        headers=request_headers(request, up),
        content=request.stream() if _has_body(request) else None,
        timeout=TIMEOUT,
    )
    try:
        resp = await ctx.http.send(upstream_req, stream=True)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        why = type(exc).__name__
        log.warning("%s proxy: %s %s failed: %s", up.name, request.method, request.url.path, why)
        return PlainTextResponse(up.failure, status_code=502)
    out = StreamingResponse(
        _relay(resp, up), status_code=resp.status_code, background=BackgroundTask(resp.aclose)
    )
    # raw headers, not a mapping: repeated ones (each Set-Cookie of a CP login) must stay separate
    out.raw_headers = response_headers(resp)
    return out


async def _relay(resp: httpx.Response, up: Upstream) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:  # the upstream broke off mid-body: end the stream, log why
        log.warning("%s proxy: upstream body cut: %s", up.name, type(exc).__name__)
    finally:  # also when the client went away mid-stream (no background task runs then)
        await resp.aclose()
