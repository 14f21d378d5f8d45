"""The channels package's process state, one typed part of the context (`ctx.channels`): the Telegram
pollers and the manager's wake-up. Its background work (pollers, inbound messages) runs on the app's task
supervisor under the `channels` (pollers) and `channels-inbound` groups, so the manager can stop it and the
app drains it at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from workspace_server.context import AppContext

TASKS_GROUP = "channels"  # the Telegram pollers
INBOUND_GROUP = "channels-inbound"  # inbound messages in flight, and discover's resume


@dataclass
class Poller:
    version: str  # manager.version of the channel it polls
    task: asyncio.Task[None]


@dataclass
class ChannelsState:
    pollers: dict[str, Poller] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    paused_tokens: set[str] = field(default_factory=set)  # fingerprints held by POST /channels/discover


def state_of(ctx: AppContext) -> ChannelsState:
    return ctx.channels


def spawn(
    ctx: AppContext, coro: Coroutine[Any, Any, Any], name: str, group: str = INBOUND_GROUP
) -> asyncio.Task[Any]:
    """Inbound work and pollers, on the app's task supervisor (named, crash logged, drained at shutdown)."""
    return ctx.tasks.spawn(name, coro, group=group)


def reload(ctx: AppContext) -> None:
    """Ask the manager (on the leader) to reconcile its pollers with the rows now."""
    state_of(ctx).wake.set()
