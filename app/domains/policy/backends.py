"""Where the live policy state is served from: Redis (shared by every worker) or in-process.

The durable copy lives in the database (see PolicyStore): writers take turns on its row lock
and then `put` the new state here with the next version. A put never moves a backend back to
an older version, and every put notifies the other processes (Redis pub/sub).
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis

from app.domains.policy.state import PolicyState

ChangeListener = Callable[[int], Awaitable[None]]


class PolicyBackendError(Exception):
    """The backend could not be reached or answered wrongly."""


class PolicyBackend(Protocol):
    name: str

    async def load(self) -> PolicyState | None: ...

    async def initialize(self, state: PolicyState) -> PolicyState:
        """Store `state` (with its version) unless a state exists already; return the state in force."""
        ...

    async def put(self, state: PolicyState) -> int:
        """Store `state` if its version is newer than the stored one; return the version in force."""
        ...

    async def listen(self, on_change: ChangeListener) -> None:
        """Call `on_change(version)` for every change until cancelled; raise when disconnected."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class InProcessPolicyBackend:
    """Policy state in this process's memory (one worker); the database keeps the durable copy."""

    name = "in_process"

    def __init__(self) -> None:
        self._state: PolicyState | None = None
        self._listeners: list[asyncio.Queue[int]] = []
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise PolicyBackendError("in-process policy backend marked unavailable")

    async def load(self) -> PolicyState | None:
        self._check()
        return self._state

    async def initialize(self, state: PolicyState) -> PolicyState:
        self._check()
        if self._state is None:
            self._state = state.with_version(max(state.version, 1))
        return self._state

    async def put(self, state: PolicyState) -> int:
        self._check()
        if self._state is not None and self._state.version >= state.version:
            return self._state.version
        self._state = state
        for queue in self._listeners:
            queue.put_nowait(state.version)
        return state.version

    async def listen(self, on_change: ChangeListener) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                await on_change(await queue.get())
        finally:
            self._listeners.remove(queue)

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        return None


_PUT = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local version = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 and current >= version then return current end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], version)
redis.call('PUBLISH', ARGV[3], version)
return version
"""

_INIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


def _parse(raw: bytes | str, version: bytes | str | int | None) -> PolicyState:
    try:
        return PolicyState.from_json(raw, int(version or 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PolicyBackendError(f"redis holds an unreadable policy state ({type(exc).__name__})") from exc


class RedisPolicyBackend:
    """Policy state in Redis, shared by every worker and every instance."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "qt", timeout: float = 0.5) -> None:
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
        )
        self._pubsub_redis: Redis = Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout,
            health_check_interval=5,
        )
        self.state_key = f"{prefix}:policy:state"
        self.version_key = f"{prefix}:policy:version"
        self.channel = f"{prefix}:policy:changed"
        self._put = self._redis.register_script(_PUT)
        self._init = self._redis.register_script(_INIT)

    async def load(self) -> PolicyState | None:
        try:
            raw, version = await self._redis.mget(self.state_key, self.version_key)
        except Exception as exc:
            raise PolicyBackendError(f"redis: {exc}") from exc
        if raw is None:
            return None
        return _parse(raw, version)

    async def initialize(self, state: PolicyState) -> PolicyState:
        try:
            raw, version = await self._init(
                keys=[self.state_key, self.version_key],
                args=[state.to_json(), max(state.version, 1), self.channel],
            )
        except Exception as exc:
            raise PolicyBackendError(f"redis: {exc}") from exc
        return _parse(raw, version)

    async def put(self, state: PolicyState) -> int:
        try:
            version = await self._put(
                keys=[self.state_key, self.version_key],
                args=[state.version, state.to_json(), self.channel],
            )
        except Exception as exc:
            raise PolicyBackendError(f"redis: {exc}") from exc
        return int(version)

    async def listen(self, on_change: ChangeListener) -> None:
        pubsub = self._pubsub_redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    await on_change(int(message["data"]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PolicyBackendError(f"redis pub/sub: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except Exception as exc:
            raise PolicyBackendError(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pubsub_redis.aclose()
