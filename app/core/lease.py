"""Leadership: which process of a deployment decides what must be decided once (the portfolio
policy, the operating mode), while every process applies the decision.

With Redis: a lease `SET key identity NX PX ttl`, renewed every ttl/3 by its holder (a script that
extends it only while it still holds the identity). A holder that cannot reach Redis keeps leading
until it can (no other process can take the lease meanwhile, unless it expires on a Redis that the
others reach: the documented worst case is two deciders for up to one ttl; both store the same
rules' decisions). Without Redis (the embedded default, one process) this process always leads.
"""

import asyncio
import contextlib
import logging
import os
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def process_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Leadership:
    def __init__(
        self,
        redis_url: str | None,
        key: str,
        identity: str | None = None,
        ttl_seconds: float = 10.0,
        timeout: float = 0.5,
    ) -> None:
        self.key = key
        self.identity = identity or process_identity()
        self.ttl_seconds = ttl_seconds
        self._url = redis_url
        self._timeout = timeout
        self._redis: Redis | None = None
        self._leader = redis_url is None
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    @property
    def shared(self) -> bool:
        """True when processes share the lease through Redis."""
        return self._url is not None

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        if self._url is None or self._task is not None:
            return
        self._redis = Redis.from_url(self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout)
        await self.refresh()
        self._task = asyncio.create_task(self._keep(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._redis is not None:
            if self._leader:
                with contextlib.suppress(RedisError, OSError):  # else the lease expires by itself
                    await self._redis.eval(_RELEASE, 1, self.key, self.identity)
            await self._redis.aclose()
            self._redis = None
        self._leader = self._url is None

    async def refresh(self) -> bool:
        """Renew the lease if held, else try to take it; Redis errors leave the role unchanged."""
        assert self._redis is not None
        ttl_ms = int(self.ttl_seconds * 1000)
        try:
            if self._leader:
                renewed = await self._redis.eval(_RENEW, 1, self.key, self.identity, ttl_ms)
                if renewed:
                    self.last_error = None
                    return True
            taken = await self._redis.set(self.key, self.identity, nx=True, px=ttl_ms)
        except (RedisError, OSError) as exc:
            error = f"{type(exc).__name__}"
            if error != self.last_error:
                logger.warning("leadership_unreachable", extra={"error_class": error, "leader": self._leader})
            self.last_error = error
            return self._leader
        self.last_error = None
        if bool(taken) != self._leader:
            logger.info("leadership_changed", extra={"leader": bool(taken), "identity": self.identity})
        self._leader = bool(taken)
        return self._leader

    async def holder(self) -> str | None:
        """The identity holding the lease (None without Redis or when nobody holds it)."""
        if self._redis is None:
            return self.identity if self._leader else None
        try:
            value = await self._redis.get(self.key)
        except (RedisError, OSError):
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            await self.refresh()
