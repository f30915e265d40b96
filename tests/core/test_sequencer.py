"""Sequencer: commands run in order, grouped in batches, each caller gets its own outcome."""

import asyncio
from collections.abc import Sequence

import pytest

from app.core.sequencer import Sequencer


async def test_concurrent_commands_are_batched_in_order() -> None:
    batches: list[list[int]] = []

    async def process(commands: Sequence[int]) -> list[object]:
        batches.append(list(commands))
        await asyncio.sleep(0.005)
        return [ValueError(c) if c == 3 else c * 10 for c in commands]

    sequencer: Sequencer[int] = Sequencer(process, max_batch=4)
    results = await asyncio.gather(*(sequencer.submit(i) for i in range(10)), return_exceptions=True)
    assert [b for batch in batches for b in batch] == list(range(10))
    assert max(len(b) for b in batches) <= 4 and len(batches) < 10
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(10) if i != 3]


async def test_a_failed_batch_fails_every_caller_of_it_and_the_next_batch_runs() -> None:
    calls = 0

    async def process(commands: Sequence[int]) -> list[object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database down")
        return list(commands)

    sequencer: Sequencer[int] = Sequencer(process)
    with pytest.raises(ConnectionError):
        await sequencer.submit(1)
    assert await sequencer.submit(2) == 2


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    gate = asyncio.Event()

    async def process(commands: Sequence[int]) -> list[object]:
        await gate.wait()
        return list(commands)

    sequencer: Sequencer[int] = Sequencer(process)
    first = asyncio.create_task(sequencer.submit(1))
    await asyncio.sleep(0)
    first.cancel()
    second = asyncio.create_task(sequencer.submit(2))
    await asyncio.sleep(0)
    gate.set()
    assert await second == 2
