"""The channels package's process state, kept on the context under one key so that the context needs no
field of ours: the Telegram pollers, the inbound tasks in flight, the manager's wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from workspace_server.context import AppContext

KEY = "channels"


@dataclass
class Poller:
    version: str  # manager.version of the channel it polls
    task: asyncio.Task[None]


@dataclass
class ChannelsState:
    pollers: dict[str, Poller] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    paused_tokens: set[str] = field(default_factory=set)  # fingerprints held by POST /channels/discover

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A background task kept referenced until it ends (asyncio holds tasks weakly)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def state_of(ctx: AppContext) -> ChannelsState:
    found = ctx.extras.get(KEY)
    if not isinstance(found, ChannelsState):
        found = ctx.extras[KEY] = ChannelsState()
    return found


def reload(ctx: AppContext) -> None:
    """Ask the manager (on the leader) to reconcile its pollers with the rows now."""
    state_of(ctx).wake.set()
