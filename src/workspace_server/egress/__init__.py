"""One egress policy for every URL the server dials (issue 11 §2). See `policy` and `clients`.

Call sites:
- A2A proxy (and through it MCP delegation, delegations, schedules, the queue drain): `check_static`
  before the call, `GuardedResolver` at connect time; server-assigned URLs through `assigned(ctx)`.
- transcript, traces, session verification: `ctx.http`, built by `guarded_http_client`.
- registration: `validate_agent_url`; discovery: `is_safe_url`; plugins: `check_url` before `git clone`.
"""

from __future__ import annotations

from workspace_server.config import Settings
from workspace_server.context import AppContext
from workspace_server.egress.policy import (
    Assigned,
    EgressPolicy,
    EgressRefused,
    IPAddress,
    Target,
    UnsafeURL,
    normalise_ip,
    parse_url,
    policy_for,
    resolve,
)

__all__ = [
    "Assigned",
    "EgressPolicy",
    "EgressRefused",
    "IPAddress",
    "Target",
    "UnsafeURL",
    "assigned",
    "is_safe_url",
    "normalise_ip",
    "parse_url",
    "policy_for",
    "resolve",
    "validate_agent_url",
]


def assigned(ctx: AppContext) -> Assigned:
    """The addresses this server's backends started agents at (in-process; see `Assigned`)."""
    return ctx.egress_assigned


async def validate_agent_url(url: str, settings: Settings) -> None:
    """Registration check (spec 03 §1.2); raises UnsafeURL with a log-only reason."""
    await policy_for(settings).check_registration_url(url)


async def is_safe_url(url: str, settings: Settings) -> bool:
    """The full pre-dial check (form + every resolved address) as a bool (discovery, spec 03 §1.5)."""
    try:
        await policy_for(settings).check_url(url)
    except UnsafeURL:
        return False
    return True
