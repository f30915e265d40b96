"""EventBus: handlers isolated, failures counted, the publisher never blocked."""

import asyncio
from dataclasses import FrozenInstanceError, dataclass

import pytest
from prometheus_client import REGISTRY

from app.core.bus import Event, EventBus
from app.core.context import trace_id_var


@dataclass(frozen=True, kw_only=True)
class Pinged(Event):
    n: int


def failures(handler: str) -> float:
    return REGISTRY.get_sample_value("event_handler_failures_total", {"event": "Pinged", "handler": handler}) or 0.0


async def test_a_failing_handler_is_counted_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    async def broken(event: Event) -> None:
        raise RuntimeError("boom")

    async def fine(event: Event) -> None:
        assert isinstance(event, Pinged)
        seen.append(event.n)

    bus = EventBus({Pinged: [broken, fine]})
    before = failures(broken.__qualname__)
    event = Pinged(n=1)
    bus.publish(event)
    await bus.drain()
    assert seen == [1]
    assert bus.failures == 1
    assert failures(broken.__qualname__) == before + 1
    record = next(r for r in caplog.records if r.getMessage() == "event_handler_failed")
    assert record.event_id == event.event_id  # type: ignore[attr-defined]


async def test_a_slow_handler_does_not_block_the_publisher_or_others() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(event: Event) -> None:
        await release.wait()
        seen.append("slow")

    async def quick(event: Event) -> None:
        seen.append("quick")

    bus = EventBus({Pinged: [slow, quick]})
    bus.publish(Pinged(n=1))  # returns at once
    await asyncio.sleep(0.01)
    assert seen == ["quick"]
    release.set()
    await bus.drain()
    assert seen == ["quick", "slow"]


async def test_handlers_see_the_trace_id_of_the_publisher() -> None:
    seen: list[str | None] = []

    async def record(event: Event) -> None:
        seen.append(trace_id_var.get())

    token = trace_id_var.set("trace-abc-123")
    try:
        event = Pinged(n=2)
    finally:
        trace_id_var.reset(token)
    bus = EventBus({Pinged: [record]})
    bus.publish(event)
    await bus.drain()
    assert seen == ["trace-abc-123"]


def test_events_are_immutable() -> None:
    event = Pinged(n=3)
    with pytest.raises(FrozenInstanceError):
        event.n = 4  # type: ignore[misc]
