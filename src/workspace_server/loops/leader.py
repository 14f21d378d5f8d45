"""Leader election by a lease row in `leader_leases` (DESIGN §6).

Whoever holds an unexpired lease runs the duty. Acquire and renew are the same compare-and-set UPDATE
(`WHERE name=? AND (holder=me OR expires_at < now)`); a missing row is INSERTed, and the loser of an INSERT
race sees an integrity error and simply does not lead this round. SQLite (one process) goes through the
same path, so the code under test is the code in production.

Times are the application clock. Replicas whose clocks disagree by more than a few seconds could overlap
briefly; every sweep effect is a compare-and-set on the row, so an overlap repeats no work.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from workspace_server.common.time import utcnow
from workspace_server.db.schema import leader_leases

HOLDER_MAX = 64  # leader_leases.holder is String(64)


def new_holder_id() -> str:
    """hostname:pid:random — unique per process even when containers share a hostname and pid 1."""
    suffix = f":{os.getpid()}:{secrets.token_hex(4)}"
    return socket.gethostname()[: HOLDER_MAX - len(suffix)] + suffix


class Lease:
    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        holder: str,
        *,
        ttl: float = 15.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self._clock = clock
        self._valid_until: datetime | None = None

    @property
    def held(self) -> bool:
        """True while the last successful renew is younger than the TTL (measured from before it was sent)."""
        return self._valid_until is not None and self._clock() < self._valid_until

    def forget(self) -> None:
        self._valid_until = None

    async def renew(self) -> bool:
        """Acquire or extend the lease; True if this process now holds it."""
        now = self._clock()
        try:
            won = await self._claim(now) or await self._insert(now)
        except Exception:
            self.forget()
            raise
        self._valid_until = now + self.ttl if won else None
        return won

    async def release(self) -> None:
        """Expire our lease now so a peer can take over without waiting out the TTL."""
        self.forget()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(leader_leases)
                .where(leader_leases.c.name == self.name, leader_leases.c.holder == self.holder)
                .values(expires_at=self._clock())
            )

    async def _claim(self, now: datetime) -> bool:
        stmt = (
            sa.update(leader_leases)
            .where(
                leader_leases.c.name == self.name,
                sa.or_(leader_leases.c.holder == self.holder, leader_leases.c.expires_at < now),
            )
            .values(holder=self.holder, expires_at=now + self.ttl)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def _insert(self, now: datetime) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.insert(leader_leases).values(
                        name=self.name, holder=self.holder, expires_at=now + self.ttl
                    )
                )
        except IntegrityError:  # the row exists: someone else holds an unexpired lease (or won the race)
            return False
        return True
