"""Signal latency (features included), the event loop's lag under a burst of signal requests, training time.

The ensemble is trained here (one torch epoch is enough: inference cost does not depend on how long a
model trained); the figures time the service's own path, inference on its worker thread included.

- One symbol: the whole `SignalService.signals` call (symbol resolution, candles from the in-memory cache,
  then features, the models and the ensemble on the inference thread), as served: members with zero
  ensemble weight are not run. The same with every member given a weight, so all four models run.
- 42 symbols: the data has 7 perpetuals with candles (5 of them tradable), fewer than 42, so the batch is
  those 7 at 6 different times (symbols repeated), scored in one vote on the inference thread (features,
  the weighted models, the ensemble; reading the candles is not included).
- Event-loop lag: while 50 signal requests run concurrently (`SignalService.signal`, the 5 offered symbols
  at 10 times each; the service scores the requests queued while its thread is busy in one batch), a
  ticker task sleeps 1 ms in a loop and records by how much each sleep overshoots (every sleep that
  overlaps a burst counts). Startup objects are frozen out of the GC first, as the app does. For
  comparison, the same burst with inference run on the event loop (how it was served before).
- Training: `fit_models` on 2 symbols x 2 years of 1 h candles with the default configuration.
"""

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from app.domains.learning.backtest import served_barriers
from app.domains.learning.dataset import split_by_time, symbol_rows
from app.domains.learning.pipeline import MarketSeries, train_meta_layer
from app.domains.learning.training import fit_models
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.signals.ensemble import Ensemble
from app.domains.signals.modelset import TrainedModels, TrainingConfig
from app.domains.signals.service import Champion, History, SignalService, warm_up
from bench.harness import Figure, Target, spread

NAME = "signals"
HOUR = 3_600_000
DAY = 24 * HOUR
CONCURRENT = 50
TICK_S = 0.001


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


class _Version:
    """Stands in for the registry row; the bench scores a freshly trained set."""

    id = "bench"


def _service(market: ReplayMarketData, trained: TrainedModels) -> SignalService:
    service = SignalService(market, registry=None, allow_fallback=False)  # type: ignore[arg-type]
    service.champion = Champion(version=_Version(), trained=trained, member_ids={})  # type: ignore[arg-type]
    return service


async def _scenario(quick: bool) -> dict[str, Any]:
    market = ReplayMarketData(cache_size=64)
    small = TrainingConfig(torch_epochs=1)
    trained = fit_models(
        await _rows(market, ["BTC/USDT:USDT", "ETH/USDT:USDT"], _ms("2023-01-01"), _ms("2023-05-01"), small), small
    )
    all_four = replace(trained, ensemble=Ensemble(dict.fromkeys(trained.ensemble.weights, 0.25), 1.0))
    service = _service(market, trained)
    service_all = _service(market, all_four)
    # The meta layer as the pipeline trains it (cross-fitted primaries, the served rule's barriers): a served
    # LONG/SHORT call also runs it, so the figures include it.
    # (on a year: the cross-fitted ensembles of a four-month window beat no prior, and the layer is then absent)
    series = [
        MarketSeries(
            await market.candles(symbol, "1h", _ms("2022-04-01"), _ms("2023-05-01")),
            await market.funding(symbol, _ms("2022-04-01"), _ms("2023-05-01")),
        )
        for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT")
    ]
    year = await _rows(market, ["BTC/USDT:USDT", "ETH/USDT:USDT"], _ms("2022-05-01"), _ms("2023-05-01"), small)
    layer = train_meta_layer(series, year, small, served_barriers(), _ms("2023-05-01"), folds=2)
    for s in (service, service_all):
        assert s.champion is not None
        s.champion.meta = layer.model
        s.champion.meta_absent = layer.absent or ""
    for s in (service, service_all):
        # as load_champion does on the inference thread (a freshly fitted set has not been traced yet)
        await s._off_loop(_warm, s)
    symbols = market.symbols()
    as_of = _ms("2024-06-01")
    histories = [await service.history(s, as_of - k * 97 * HOUR) for k in range(6) for s in symbols]
    offered = ["ADA/USDT:USDT", "BTC/USDT:USDT", "DOGE/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"]
    return {
        "market": market,
        "service": service,
        "service_all": service_all,
        "trained": trained,
        "symbols": symbols,
        "offered": offered,
        "as_of": as_of,
        "histories": histories,
    }


def _warm(service: SignalService) -> None:
    assert service.champion is not None
    warm_up(service.champion.trained)


def _time(call: Callable[[], None], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _lag_during(burst: Callable[[], Awaitable[None]], rounds: int) -> list[float]:
    """Overshoot (ms) of the 1 ms sleeps of a ticker task on the event loop that overlap a run of `burst`
    (`rounds` runs); a sleep that overshoots because the loop was blocked is counted whole."""
    ticks: list[tuple[float, float]] = []  # (began, ended) of every sleep
    bursts: list[tuple[float, float]] = []

    async def ticker() -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(TICK_S)
            ticks.append((began, time.perf_counter()))

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        for _ in range(rounds):
            began = time.perf_counter()
            await burst()
            bursts.append((began, time.perf_counter()))
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return [
        (end - start - TICK_S) * 1000
        for start, end in ticks
        if any(start < b_end and end > b_start for b_start, b_end in bursts)
    ]


def _requests(s: dict[str, Any]) -> list[tuple[str, int]]:
    per_symbol = CONCURRENT // len(s["offered"])
    return [(symbol, s["as_of"] - k * 7 * HOUR) for k in range(per_symbol) for symbol in s["offered"]]


async def _burst_served(service: SignalService, requests: list[tuple[str, int]]) -> None:
    made = await asyncio.gather(*(service.signal(symbol, at) for symbol, at in requests))
    if len(made) != CONCURRENT or any(m.source != "ensemble" for m in made):
        raise AssertionError("the burst did not give 50 ensemble signals")


async def _burst_on_loop(service: SignalService, requests: list[tuple[str, int]]) -> None:
    """The same requests with features and models run on the event loop (as before this change)."""
    champion = service.champion
    assert champion is not None

    async def one(symbol: str, at: int) -> None:
        history = await service.history(symbol, at)
        service.compute(champion, [history], service.max_age_seconds)

    await asyncio.gather(*(one(symbol, at) for symbol, at in requests))


def _figure(name: str, ms: dict[str, float], samples: int, kind: str, target: float | None, note: str) -> Figure:
    return Figure(
        name,
        "ms",
        ms["median"],
        "median of " + kind,
        samples,
        kind,
        ms["p50"],
        ms["p90"],
        ms["p99"],
        Target("<=", target) if target is not None else None,
        note,
    )


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    s = asyncio.run(_scenario(quick))
    service: SignalService = s["service"]
    service_all: SignalService = s["service_all"]
    champion = service.champion
    assert champion is not None
    active = list(champion.trained.ensemble.active)
    loop = asyncio.new_event_loop()

    def one_with(svc: SignalService, ran: int) -> Callable[[], None]:
        def one() -> None:
            signal = loop.run_until_complete(svc.signals(["BTC/USDT:USDT"], s["as_of"]))[0]
            if signal.source != "ensemble" or sum(v.ran for v in signal.votes) != ran:
                raise AssertionError(f"expected an ensemble signal with {ran} members run, got {signal}")

        return one

    histories: list[History] = s["histories"]

    def batch() -> None:
        signals = loop.run_until_complete(service._off_loop(service.compute, champion, histories, 7200.0))
        if len(signals) != 42 or any(x.source != "ensemble" for x in signals):
            raise AssertionError("the batch did not give 42 ensemble signals")

    repeats_one, repeats_batch, rounds = (50, 10, 5) if quick else (400, 60, 40)
    one, one_all = one_with(service, len(active)), one_with(service_all, 4)
    _time(one, 20)
    _time(one_all, 20)
    _time(batch, 3)
    gc.collect()
    gc.freeze()  # as the app's lifespan does after startup
    one_ms = spread(_time(one, repeats_one))
    one_all_ms = spread(_time(one_all, repeats_one))
    batch_ms = spread(_time(batch, repeats_batch))
    requests = _requests(s)
    idle = loop.run_until_complete(_lag_during(lambda: asyncio.sleep(0.05), max(3, rounds // 4)))
    served = loop.run_until_complete(_lag_during(lambda: _burst_served(service, requests), rounds))
    served_all = loop.run_until_complete(_lag_during(lambda: _burst_served(service_all, requests), rounds))
    on_loop = loop.run_until_complete(_lag_during(lambda: _burst_on_loop(service, requests), rounds))
    burst_ms = spread(_time(lambda: loop.run_until_complete(_burst_served(service, requests)), max(5, rounds // 2)))
    for svc in (service, service_all):
        loop.run_until_complete(svc.close())
    loop.close()
    gc.unfreeze()
    lag = {name: spread(v) for name, v in (("idle", idle), ("served", served), ("served_all_4", served_all))}
    lag["inference_on_loop"] = spread(on_loop)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in champion.trained.ensemble.weights.items())
    figures = [
        _figure(
            f"signal, 1 symbol (features + {len(active)} weighted models + ensemble)",
            one_ms,
            repeats_one,
            "calls",
            2.0,
            f"as served; weights {weights}; zero-weight members not run; meta layer "
            f"{'run on LONG/SHORT calls' if champion.meta is not None else 'absent: ' + champion.meta_absent}; "
            "720 candles from the in-memory cache",
        ),
        _figure(
            "signal, 1 symbol, all 4 models weighted",
            one_all_ms,
            repeats_one,
            "calls",
            2.0,
            "every member given weight 0.25, so xgboost, lightgbm, nhits and patchtst all run",
        ),
        _figure(
            "signal batch, 42 symbols",
            batch_ms,
            repeats_batch,
            "batches",
            20.0,
            "7 perpetuals x 6 times (fewer than 42 symbols have data: repeated); on the inference thread; "
            "data reads excluded",
        ),
        Figure(
            f"event-loop lag p99 during {CONCURRENT} concurrent signal requests",
            "ms",
            lag["served"]["p99"],
            "p99 of 1 ms sleeps' overshoot",
            len(served),
            "ticks",
            lag["served"]["p50"],
            lag["served"]["p90"],
            lag["served"]["p99"],
            Target("<=", 5.0),
            f"{rounds} bursts; idle loop p99 {lag['idle']['p99']:.2f} ms; all 4 models weighted p99 "
            f"{lag['served_all_4']['p99']:.2f} ms; inference on the loop (before) p99 "
            f"{lag['inference_on_loop']['p99']:.2f} ms, max {lag['inference_on_loop']['max']:.1f} ms; "
            f"a burst of {CONCURRENT} takes {burst_ms['median']:.1f} ms",
        ),
    ]
    details: dict[str, Any] = {
        "one_symbol_ms": one_ms,
        "one_symbol_all_4_ms": one_all_ms,
        "batch_42_ms": batch_ms,
        "weights": champion.trained.ensemble.weights,
        "event_loop_lag_ms": lag,
        "burst_of_50_ms": burst_ms,
    }
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
