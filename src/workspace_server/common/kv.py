"""Small key/value cache with TTLs: Redis when configured (shared by replicas), else in-process.

Keys follow the reference (`ws:{id}`, `ws:{id}:url`, `ws:{id}:internal_url`) so operators reading Redis
see familiar names. Nothing here decides liveness: that is the database's job (DESIGN §6).
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class KV(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def expire(self, key: str, ttl: float) -> None: ...
    async def incr(self, key: str, ttl: float) -> int: ...


class MemoryKV:
    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}

    async def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        if len(self._data) > 50_000:  # bound memory: drop expired entries
            now = time.monotonic()
            self._data = {k: v for k, v in self._data.items() if v[1] >= now}
        self._data[key] = (value, time.monotonic() + ttl)

    async def delete(self, *keys: str) -> None:
        for k in keys:
            self._data.pop(k, None)

    async def expire(self, key: str, ttl: float) -> None:
        """Extend a live key; an absent or expired key stays absent (Redis EXPIRE semantics)."""
        item = self._data.get(key)
        if item is None:
            return
        now = time.monotonic()
        if item[1] < now:
            self._data.pop(key, None)
        else:
            self._data[key] = (item[0], now + ttl)

    async def incr(self, key: str, ttl: float) -> int:
        """Redis INCR (an absent key counts from 0), then the key lives `ttl` seconds."""
        count = int(await self.get(key) or 0) + 1
        await self.set(key, str(count), ttl)
        return count


class RedisKV:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._redis.set(key, value, px=int(ttl * 1000))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*keys)

    async def expire(self, key: str, ttl: float) -> None:
        await self._redis.pexpire(key, int(ttl * 1000))

    async def incr(self, key: str, ttl: float) -> int:
        pipe = self._redis.pipeline(transaction=False)  # one round trip
        pipe.incr(key)
        pipe.pexpire(key, int(ttl * 1000))
        count, _ = await pipe.execute()
        return int(count)


URL_TTL = 300.0


def url_key(ws_id: str) -> str:
    return f"ws:{ws_id}:url"


def internal_url_key(ws_id: str) -> str:
    return f"ws:{ws_id}:internal_url"


def queue_epoch_key(ws_id: str) -> str:
    """Bumped by every enqueue for the workspace (a2a/caches.QueueHint): replicas' "queue empty" checks."""
    return f"a2a:queue-epoch:{ws_id}"


def liveness_key(ws_id: str) -> str:
    return f"ws:{ws_id}"


async def clear_workspace_keys(kv: KV, ws_id: str) -> None:
    await kv.delete(liveness_key(ws_id), url_key(ws_id), internal_url_key(ws_id))
