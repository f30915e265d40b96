"""ExposureMemory: stream entry validation, running sums equal a rescan, eviction, health."""

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from app.domains.governance.memory import ExposureMemory, MalformedEntry, MemoryEvent, parse_stream_entry

ENTRY = {
    "timestamp": "2025-12-21T12:00:00",
    "symbol": "BTCUSDT",
    "side": "LONG",
    "leverage": "20",
    "pnl": "0.32",
    "confidence": "0.72",
    "volatility": "0.14",
    "position_size": "1000",
    "exit_reason": "dynamic_tp",
}


def test_parse_the_issue_example_as_bytes_and_str() -> None:
    event = parse_stream_entry({k.encode(): v.encode() for k, v in ENTRY.items()})
    assert event == MemoryEvent(
        datetime(2025, 12, 21, 12, tzinfo=UTC), "BTCUSDT", "LONG", 20.0, 0.32, 0.72, 0.14, 1000.0, "dynamic_tp"
    )
    assert parse_stream_entry(ENTRY) == event
    shorter = parse_stream_entry(
        {k: v for k, v in ENTRY.items() if k in {"timestamp", "symbol", "side", "leverage", "pnl"}}
    )
    assert shorter.confidence is None and shorter.volatility is None and shorter.exit_reason == "unknown"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pnl", "nan", "pnl: not finite"),
        ("pnl", "inf", "pnl: not finite"),
        ("pnl", "abc", "pnl: not a number"),
        ("pnl", None, "pnl: missing"),
        ("leverage", "0", "leverage: must be > 0"),
        ("leverage", "-1e400", "leverage: not finite"),
        ("side", "UP", "side: unknown"),
        ("timestamp", "yesterday", "timestamp: not ISO"),
        ("timestamp", None, "timestamp: missing"),
        ("symbol", "", "symbol"),
        ("confidence", "1.5", "confidence: outside"),
        ("volatility", "-0.1", "volatility: negative"),
        ("position_size", "0", "position_size: must be > 0"),
    ],
)
def test_malformed_entries_raise_naming_the_field(field: str, value: str | None, message: str) -> None:
    fields = dict(ENTRY)
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    with pytest.raises(MalformedEntry, match=message):
        parse_stream_entry(fields)


def test_non_utf8_bytes_are_malformed() -> None:
    with pytest.raises(MalformedEntry):
        parse_stream_entry({b"timestamp": b"\xff\xfe"})


def random_event(rng: random.Random, t0: datetime, i: int) -> MemoryEvent:
    return MemoryEvent(
        timestamp=t0 + timedelta(minutes=i),
        symbol=rng.choice(["BTCUSDT", "ETHUSDT", "XRPUSDT"]),
        side=rng.choice(["LONG", "SHORT"]),
        leverage=rng.uniform(1, 50),
        pnl=rng.uniform(-5, 5),
        confidence=rng.choice([None, rng.random()]),
        volatility=rng.choice([None, rng.uniform(0, 1)]),
        position_size=rng.uniform(10, 1000),
        exit_reason="tp",
    )


def rescan(events: list[MemoryEvent]) -> dict[str, float | int | None]:
    n = len(events)
    conf = [e.confidence for e in events if e.confidence is not None]
    vol = [e.volatility for e in events if e.volatility is not None]
    return {
        "count": n,
        "avg_pnl": math.fsum(e.pnl for e in events) / n,
        "avg_confidence": math.fsum(conf) / len(conf) if conf else None,
        "avg_volatility": math.fsum(vol) / len(vol) if vol else None,
        "avg_leverage": math.fsum(e.leverage for e in events) / n,
        "win_rate": sum(e.pnl > 0 for e in events) / n,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_running_sums_after_eviction_equal_a_rescan_of_the_window(seed: int) -> None:
    rng = random.Random(seed)
    memory = ExposureMemory(window=50)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    every = [random_event(rng, t0, i) for i in range(1000)]
    for i, event in enumerate(every):
        assert memory.record(f"k{i}", event)
        if i % 97 == 0 or i == len(every) - 1:
            window = every[max(0, i - 49) : i + 1]
            assert memory.events() == window
            got, want = memory.summary(), rescan(window)
            for name, value in want.items():
                actual = getattr(got, name)
                assert (actual is None) == (value is None), name
                if value is not None:
                    assert math.isclose(actual, value, rel_tol=1e-9, abs_tol=1e-9), name
            per_symbol = memory.per_symbol()
            assert sum(s.count for s in per_symbol.values()) == len(window)
            for symbol, stats in per_symbol.items():
                mine = [e for e in window if e.symbol == symbol]
                assert stats.count == len(mine)
                assert math.isclose(stats.avg_pnl, math.fsum(e.pnl for e in mine) / len(mine), abs_tol=1e-9)
                assert stats.win_rate == sum(e.pnl > 0 for e in mine) / len(mine)
    health = memory.health()
    assert health.samples == 50 and health.window == 50 and health.recorded_total == 1000
    assert health.oldest == every[950].timestamp and health.newest == every[-1].timestamp


def test_a_key_is_recorded_once_and_is_free_again_after_eviction() -> None:
    memory = ExposureMemory(window=2)
    event = parse_stream_entry(ENTRY)
    assert memory.record("a", event) and not memory.record("a", event)
    assert memory.record("b", event) and memory.record("c", event)
    assert "a" not in memory and len(memory) == 2
    memory.reject()
    assert memory.health().rejected == 1


def test_an_empty_memory_has_no_averages_and_a_symbol_leaves_with_its_last_event() -> None:
    memory = ExposureMemory(window=1)
    summary = memory.summary()
    assert summary.count == 0 and summary.avg_pnl is None and summary.win_rate is None
    memory.record("a", parse_stream_entry(ENTRY))
    memory.record("b", parse_stream_entry({**ENTRY, "symbol": "ETHUSDT"}))
    assert list(memory.per_symbol()) == ["ETHUSDT"]
    with pytest.raises(ValueError):
        ExposureMemory(window=0)
