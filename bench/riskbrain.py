"""A full Risk Brain assessment in-process: 10,000 returns and a 100,000-path Monte Carlo.

What is timed is `assess()`, the pure function the service runs in a thread after reading the
equity curve and the open book: both VaR/ES levels by the three methods, skewness, kurtosis,
Hill, drawdowns, exposure, score and actions. The returns are fat-tailed (Student t, 3 degrees of
freedom) so the tail code takes its real branches. Each sample is one call timed with perf_counter_ns.
"""

import gc
import time
from decimal import Decimal
from typing import Any

import numpy as np

from app.domains.riskbrain.metrics import Position, RiskBrainConfig, assess
from bench.harness import Figure, Target, spread

NAME = "riskbrain"
TARGET_MS = 50.0
RETURNS = 10_000
PATHS = 100_000


def _inputs() -> tuple[Any, Decimal, list[Position], RiskBrainConfig]:
    returns = np.random.default_rng(11).standard_t(3, RETURNS) / 200
    curve = 10_000 * np.cumprod(np.concatenate(([1.0], 1 + returns)))
    positions = [
        Position("BTC/USDT:USDT", "LONG", Decimal(2500), Decimal(500)),
        Position("ETH/USDT:USDT", "SHORT", Decimal(1200), Decimal(400)),
        Position("BTC/USDT:USDT", "SHORT", Decimal(300), Decimal(100)),
    ]
    config = RiskBrainConfig(window=RETURNS, mc_paths=PATHS)
    return curve, Decimal(str(round(float(curve[-1]), 4))), positions, config


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    samples, warmup = (30, 3) if quick else (200, 10)
    curve, equity, positions, config = _inputs()
    result = assess(curve, equity, positions, config)
    if result.status != "ok" or result.samples != RETURNS or result.metrics.monte_carlo.var_99 is None:
        raise AssertionError(f"the assessment did not run in full: {result.status} {result.detail}")
    for _ in range(warmup):
        assess(curve, equity, positions, config)
    gc.collect()
    perf = time.perf_counter_ns
    timings: list[float] = []
    for _ in range(samples):
        t0 = perf()
        assess(curve, equity, positions, config)
        timings.append((perf() - t0) / 1e6)
    stats = spread(timings)
    figure = Figure(
        name=f"assessment ({RETURNS:,} returns, {PATHS:,} MC paths)",
        unit="ms",
        value=stats["median"],
        stat="median of calls",
        samples=samples,
        sample_kind="calls",
        p50=stats["p50"],
        p90=stats["p90"],
        p99=stats["p99"],
        target=Target("<=", TARGET_MS),
    )
    details = {
        "samples": samples,
        "warmup": warmup,
        "ms": {k: round(v, 3) for k, v in stats.items()},
        "score": result.score,
        "level": result.level.value if result.level else None,
        "var_99": {
            "historical": result.metrics.historical.var_99,
            "parametric": result.metrics.parametric.var_99,
            "monte_carlo": result.metrics.monte_carlo.var_99,
        },
    }
    return [figure], details
