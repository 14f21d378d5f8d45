"""Background loops. Placeholder until the loops work lands."""

from __future__ import annotations

from workspace_server.context import AppContext


class Loops:
    async def stop(self) -> None:
        return None


def start_loops(ctx: AppContext) -> Loops:
    return Loops()
