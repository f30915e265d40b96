"""Serializes commands of one account and commits them in groups.

Every command of an account must see the state left by the previous one. Instead of one
transaction per request waiting on the account's row lock, commands queue here and a
single worker applies them in order, in batches that share one transaction (group
commit): one lock, one commit, many decisions. Each caller gets its own result or error;
if the transaction fails, every caller of that batch gets the error and nothing of the
batch is stored.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

C = TypeVar("C")

BatchProcessor = Callable[[Sequence[C]], Awaitable[Sequence[Any]]]


class Sequencer(Generic[C]):
    def __init__(self, process: BatchProcessor[C], max_batch: int = 64) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: deque[tuple[C, asyncio.Future[Any]]] = deque()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, command: C) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            try:
                results = await self._process([command for command, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.wait([self._worker], timeout=10)
