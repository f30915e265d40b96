"""Signal latency with all four models (features included) and training time.

The ensemble is trained here (one torch epoch is enough: inference cost does not depend on
how long a model trained); the figures time the service's own path. One symbol: the whole
`SignalService.signals` call with market data already cached in memory. 42 symbols: the
data has 7 perpetuals, so the batch is those 7 at 6 different times, scored in one vote
(features, the four models and the ensemble; reading the candles is not included). Training:
`fit_models` on 2 symbols x 2 years of 1 h candles with the default configuration.
"""

import asyncio
import gc
import time
from datetime import UTC, datetime
from typing import Any

from app.domains.signals.marketdata import ReplayMarketData
from app.domains.signals.service import Champion, SignalService
from app.domains.signals.training import TrainingConfig, fit_models, split_by_time, symbol_rows
from bench.harness import Figure, Target, spread

NAME = "signals"
HOUR = 3_600_000
DAY = 24 * HOUR


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def _rows(market: ReplayMarketData, symbols: list[str], start: int, end: int, config: TrainingConfig) -> Any:
    parts = []
    for symbol in symbols:
        parts.append(
            symbol_rows(
                await market.candles(symbol, "1h", start, end), await market.funding(symbol, start, end), config
            )
        )
    return split_by_time(parts, end, config.embargo_hours, None, start + 10 * DAY)[0]


async def _scenario(quick: bool) -> dict[str, Any]:
    market = ReplayMarketData(cache_size=64)
    small = TrainingConfig(torch_epochs=1)
    trained = fit_models(
        await _rows(market, ["BTC/USDT:USDT", "ETH/USDT:USDT"], _ms("2023-01-01"), _ms("2023-05-01"), small), small
    )
    service = SignalService(market, registry=None, allow_fallback=False)  # type: ignore[arg-type]
    service.champion = Champion(version=_Version(), trained=trained, member_ids={})  # type: ignore[arg-type]
    symbols = market.symbols()
    as_of = _ms("2024-06-01")
    histories = [await service._history(s, as_of - k * 97 * HOUR) for k in range(6) for s in symbols]
    return {"market": market, "service": service, "symbols": symbols, "as_of": as_of, "histories": histories}


class _Version:
    """Stands in for the registry row; the bench scores a freshly trained set."""

    id = "bench"


def _time(call: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    s = asyncio.run(_scenario(quick))
    service: SignalService = s["service"]
    champion = service.champion
    assert champion is not None
    loop = asyncio.new_event_loop()

    def one() -> None:
        signal = loop.run_until_complete(service.signals(["BTC/USDT:USDT"], s["as_of"]))[0]
        if signal.source != "ensemble" or len(signal.votes) != 4:
            raise AssertionError(f"expected an ensemble signal with 4 votes, got {signal}")

    def batch() -> None:
        signals = service._vote(champion, s["histories"])
        if len(signals) != 42 or any(x.source != "ensemble" for x in signals):
            raise AssertionError("the batch did not give 42 ensemble signals")

    repeats_one, repeats_batch = (50, 10) if quick else (400, 60)
    _time(one, 20)
    _time(batch, 3)
    gc.collect()
    one_ms = spread(_time(one, repeats_one))
    batch_ms = spread(_time(batch, repeats_batch))
    loop.close()
    figures = [
        Figure(
            "signal, 1 symbol (features + 4 models + ensemble)",
            "ms",
            one_ms["median"],
            "median of calls",
            repeats_one,
            "calls",
            one_ms["p50"],
            one_ms["p90"],
            one_ms["p99"],
            Target("<=", 2.0),
            "720 candles of history from the in-memory cache",
        ),
        Figure(
            "signal batch, 42 symbols",
            "ms",
            batch_ms["median"],
            "median of batches",
            repeats_batch,
            "batches",
            batch_ms["p50"],
            batch_ms["p90"],
            batch_ms["p99"],
            Target("<=", 20.0),
            "7 perpetuals x 6 times; data reads excluded",
        ),
    ]
    details: dict[str, Any] = {"one_symbol_ms": one_ms, "batch_42_ms": batch_ms}
    if not quick:
        config = TrainingConfig()
        rows = asyncio.run(
            _rows(s["market"], ["BTC/USDT:USDT", "ETH/USDT:USDT"], _ms("2022-10-22"), _ms("2024-11-01"), config)
        )
        began = time.perf_counter()
        trained = fit_models(rows, config)
        total = time.perf_counter() - began
        details["training"] = {"rows": len(rows.y), "seconds": {**trained.fit_seconds, "total": total}}
        per_model = ", ".join(f"{k} {v:.1f} s" for k, v in trained.fit_seconds.items())
        figures.append(
            Figure(
                "training, 4 models, 2 symbols x 2 years 1 h",
                "s",
                total,
                "one run",
                1,
                "run",
                note=f"{len(rows.y)} rows; {per_model}",
            )
        )
    return figures, details
