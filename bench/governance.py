"""Exposure memory: record one closed-trade event and summarize the window (the policy's inputs).

What is timed is `record()` followed by `summary()` on a full 500-event window, so every record
also evicts the oldest event (the O(1) add-and-subtract path). Each sample times a batch of 1,000
events with perf_counter_ns and reports the time per event. `python -m bench.governance` runs it alone.
"""

import gc
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domains.governance.memory import ExposureMemory, MemoryEvent
from app.domains.governance.policy import PolicyConfig, decide
from bench.harness import Figure, Target, spread

NAME = "governance"
TARGET_US = 5.0
WINDOW = 500
BATCH = 1000


def _events(n: int) -> list[MemoryEvent]:
    rng = random.Random(7)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT"]
    return [
        MemoryEvent(
            t0 + timedelta(minutes=i),
            symbols[i % 4],
            "LONG" if i % 3 else "SHORT",
            rng.uniform(1, 30),
            rng.uniform(-3, 3),
            rng.random(),
            rng.uniform(0.05, 1),
            rng.uniform(10, 1000),
            "tp",
        )
        for i in range(n)
    ]


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    samples, warmup = (30, 3) if quick else (300, 20)
    events = _events(BATCH)
    keys = [f"stream:{i}" for i in range(BATCH * (samples + warmup + 1))]
    memory = ExposureMemory(window=WINDOW)
    for i, event in enumerate(events[:WINDOW]):
        memory.record(f"fill:{i}", event)
    perf = time.perf_counter_ns
    timings: list[float] = []
    k = 0
    gc.collect()
    for s in range(samples + warmup):
        t0 = perf()
        for event in events:
            memory.record(keys[k], event)
            memory.summary()
            k += 1
        elapsed = (perf() - t0) / 1e3 / BATCH
        if s >= warmup:
            timings.append(elapsed)
    stats = spread(timings)
    decision = decide(None, memory.summary(), PolicyConfig())
    figure = Figure(
        name=f"record + summarize one event ({WINDOW}-event window, evicting)",
        unit="µs",
        value=stats["median"],
        stat="median of per-event means over batches",
        samples=samples,
        sample_kind=f"batches of {BATCH}",
        p50=stats["p50"],
        p90=stats["p90"],
        p99=stats["p99"],
        target=Target("<=", TARGET_US),
    )
    details = {
        "samples": samples,
        "warmup": warmup,
        "us": {k: round(v, 4) for k, v in stats.items()},
        "window": len(memory),
        "policy": decision.policy.value,
        "score": decision.score,
    }
    return [figure], details


if __name__ == "__main__":
    figures, details = run("--quick" in sys.argv)
    for f in figures:
        print(f"{f.name}: {f.value:.3f} {f.unit} (p90 {f.p90:.3f}, p99 {f.p99:.3f}; target {f.target})")
    print(json.dumps(details))
