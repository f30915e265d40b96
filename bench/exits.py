"""Exit Brain plan creation, and the position monitor's work per mark-price update over 100 open positions.

Plan creation: `build_plan(ExitContext, ExitConfig)` in-process, three variants: the default ladder, the
dynamic one (an ATR of 0.8 % of the entry, regime "trending", policy CONSERVATIVE) and the PARTIAL_TRAILING
style. Each batch builds one plan for each of 14 contexts (the 7 bundled markets x LONG/SHORT, 1,000 USDT at
5x, at the real closes of 2024-03-01 02:00 UTC); the figure is the median per-plan time across batches.

Monitor update: what the position monitor runs when a new bar (mark) arrives, for 100 open positions.
The paper exchange keeps ONE net position per symbol per book (one-way mode) and the bundled markets have 7
symbols, so 100 positions are 15 paper accounts: position i is on symbol i % 7 in book i // 7 (14 books with
7 positions, 1 with 2). Sides alternate, leverage cycles 3/5/10/20x, one position in three has the
PARTIAL_TRAILING plan and the rest the default ladder. Each position is opened with a market order at the real
price and its plan's exits rest in its book: a reduce-only TAKE_PROFIT_MARKET per take-profit leg and a
reduce-only STOP_MARKET for the whole position (3 TP + SL for a ladder; 1 TP + SL for the partial-trailing plan,
whose trailing leg the monitor manages). One update = one new bar for each of the 7 symbols, and for each of
the 100 positions:
  1. `PaperBook.on_bar(bar, funding_rate)` of its book for its symbol (one call per open position), with the
     real funding rate when one settles at the bar's open;
  2. if the position is still open: `TrailingStop.update(close)` (the plan's trailing stop; a ladder position
     gets one with the default +1 % activation / 0.5 % distance, the issue's trailing rule);
  3. `harvest.propose(...)` at the close, with a MarketView (so the kill score is computed every time);
  4. `arbitrate(PositionView, proposals)` on every update: one MOVE_STOP from the trailing stop (its stop once
     armed, else the stop in force re-proposed, which the arbiter refuses as no move) plus harvest's proposals;
  5. executing the arbiter's actions in the book: a stop move cancels and re-submits the STOP_MARKET, a
     partial or full close is a reduce-only MARKET order at the close.
Marks: real 1 h futures candles (2024-2025) for ADA, BTC, DOGE, ETH and XRP, with their real funding rates.
The data has no LTC or TRX candles, so those two replay BTC's candles rescaled to LTC ~ 75 USDT and TRX ~ 0.14
USDT (their early-2024 levels), rounded to their ticks. Each round (every 61 h, so every hour of the day comes
up) opens the 100 positions afresh (untimed) at the close of the previous hour, then times 24 consecutive
hourly updates. The first update always has all 100 positions open: it is "nothing triggers" (the common case,
judged against the target) when no order filled, no funding settled and the arbiter took no action, else
"some orders trigger". The 23 later updates are the replay figure: positions close as their exits fill, so
fewer than 100 are open there. "All 100 stops fill": fresh books and one update whose bars span +-3 % around
the price for every symbol, so every stop triggers and fills (the monitor then skips the closed positions).
The details also time each step of a quiet update per position (`us_per_position_by_step`).
Timing with perf_counter_ns around the whole update; `python -m bench.exits [--quick]` runs it alone.
"""

import asyncio
import gc
import json
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from app.domains.execution.exchange import OrderRequest, OrderSide, OrderType
from app.domains.execution.paper import Bar, PaperBook
from app.domains.execution.precision import amount_to_precision, price_to_precision
from app.domains.execution.reading import READING_BARS
from app.domains.execution.service import ExecRows, ExecutionConfig, PaperExecution
from app.domains.exits.arbiter import ExitKind, ExitProposal, ExitSource, PositionView, arbitrate
from app.domains.exits.harvest import (
    Bias,
    HarvestAction,
    HarvestPosition,
    HarvestState,
    HarvestTheta,
    MarketView,
    propose,
)
from app.domains.exits.plan import (
    ExitConfig,
    ExitContext,
    ExitPlan,
    ExitStyle,
    LegKind,
    TrailingStop,
    build_plan,
)
from app.domains.markets.catalog import MarketCatalog
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.risk.guard import Side
from bench.harness import BenchError, Figure, Target, spread

T = TypeVar("T")
NAME = "exits"
PLAN_TARGET_US = 100.0
UPDATE_TARGET_MS = 1.0
POSITIONS = 100
SYMBOLS = (
    "ADA/USDT:USDT",
    "BTC/USDT:USDT",
    "DOGE/USDT:USDT",
    "ETH/USDT:USDT",
    "LTC/USDT:USDT",
    "TRX/USDT:USDT",
    "XRP/USDT:USDT",
)
# No bundled candles for these two: BTC's candles rescaled to about their early-2024 price.
RESCALED = {"LTC/USDT:USDT": Decimal("75"), "TRX/USDT:USDT": Decimal("0.14")}
HOUR = 3_600_000
T0 = int(datetime(2024, 3, 1, 3, tzinfo=UTC).timestamp() * 1000)
NOTIONAL = Decimal(1000)
LEVERAGES = (3, 5, 10, 20)
UPDATES_PER_ROUND = 24
SPACING_HOURS = 61
D = Decimal


def _d(value: float) -> Decimal:
    return Decimal(repr(float(value)))


# --- market data ------------------------------------------------------------------------------


@dataclass
class Series:
    """Per symbol: bars by open time, and funding rates by settlement time."""

    bars: dict[str, dict[int, Bar]]
    funding: dict[str, dict[int, Decimal]]


async def _load_series(start_ms: int, end_ms: int) -> Series:
    market = ReplayMarketData(cache_size=16)
    raw: dict[str, Any] = {}
    funding: dict[str, dict[int, Decimal]] = {}
    for symbol in SYMBOLS:
        source = "BTC/USDT:USDT" if symbol in RESCALED else symbol
        if source not in raw:
            raw[source] = await market.candles(source, "1h", start_ms, end_ms)
        rates = await market.funding(source, start_ms, end_ms)
        funding[symbol] = {int(t): _d(r) for t, r in zip(rates.timestamp, rates.rate, strict=True)}
    bars: dict[str, dict[int, Bar]] = {}
    for symbol in SYMBOLS:
        c = raw["BTC/USDT:USDT" if symbol in RESCALED else symbol]
        scale = RESCALED[symbol] / _d(c.close[0]) if symbol in RESCALED else None
        series: dict[int, Bar] = {}
        for i in range(len(c)):
            o, h, lo, cl = (_d(x) for x in (c.open[i], c.high[i], c.low[i], c.close[i]))
            if scale is not None:
                o, h, lo, cl = (price_to_precision(symbol, x * scale) for x in (o, h, lo, cl))
            series[int(c.timestamp[i])] = Bar(symbol, int(c.timestamp[i]), o, h, lo, cl)
        bars[symbol] = series
    return Series(bars, funding)


# --- plan creation --------------------------------------------------------------------------


def _contexts(prices: dict[str, Decimal], **extra: Any) -> list[ExitContext]:
    out = []
    for symbol in SYMBOLS:
        price = prices[symbol]
        amount = amount_to_precision(symbol, NOTIONAL / price)
        for side in ("LONG", "SHORT"):
            atr = price * D("0.008") if extra.get("dynamic") else None
            out.append(
                ExitContext(
                    side=side,
                    entry_price=price,
                    amount=amount,
                    leverage=D(5),
                    symbol=symbol,
                    atr=atr,
                    regime="trending" if atr is not None else None,
                    policy="CONSERVATIVE" if atr is not None else None,
                )
            )
    return out


def _time_plans(contexts: list[ExitContext], config: ExitConfig, batches: int, reps: int) -> list[float]:
    perf = time.perf_counter_ns
    per_call: list[float] = []
    n = len(contexts) * reps
    for _ in range(batches):
        t0 = perf()
        for _ in range(reps):
            for ctx in contexts:
                build_plan(ctx, config)
        per_call.append((perf() - t0) / n / 1000)
    return per_call


def _plan_figures(prices: dict[str, Decimal], quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    batches, reps, warmup = (30, 5, 3) if quick else (300, 10, 20)
    variants = {
        "default ladder": (_contexts(prices), ExitConfig()),
        "dynamic (ATR 0.8 %, trending, CONSERVATIVE)": (_contexts(prices, dynamic=True), ExitConfig()),
        "partial + trailing": (_contexts(prices), ExitConfig(style=ExitStyle.PARTIAL_TRAILING)),
    }
    figures: list[Figure] = []
    details: dict[str, Any] = {"batches": batches, "plans_per_batch": 14 * reps}
    for label, (contexts, config) in variants.items():
        plans = [build_plan(ctx, config) for ctx in contexts]
        refused = [p for p in plans if not isinstance(p, ExitPlan)]
        if refused:
            raise BenchError(f"plan variant {label}: {len(refused)} plans refused, e.g. {refused[0]}")
        _time_plans(contexts, config, warmup, reps)
        gc.collect()
        stats = spread(_time_plans(contexts, config, batches, reps))
        sample = plans[2]  # BTC long
        assert isinstance(sample, ExitPlan)
        details[f"plan {label}"] = {
            "us": {k: round(v, 3) for k, v in stats.items()},
            "btc_long_legs": [f"{leg.kind} {leg.trigger_price} x {leg.quantity}" for leg in sample.legs],
            "notes": sum(len(p.notes) for p in plans if isinstance(p, ExitPlan)),
        }
        figures.append(
            Figure(
                name=f"build_plan, {label}",
                unit="µs/plan",
                value=stats["median"],
                stat="median of batches",
                samples=batches,
                sample_kind=f"batches x {14 * reps} plans",
                p50=stats["p50"],
                p90=stats["p90"],
                p99=stats["p99"],
                target=Target("<=", PLAN_TARGET_US),
                note="7 markets x LONG/SHORT, 5x",
            )
        )
    return figures, details


# --- the monitor ----------------------------------------------------------------------------


@dataclass
class Managed:
    index: int
    book: PaperBook
    symbol: str
    side: str
    original: Decimal
    plan: ExitPlan
    trail: TrailingStop
    harvest: HarvestPosition
    hstate: HarvestState
    stop: Decimal
    stop_cid: str
    seq: int = 0


THETA = HarvestTheta()
VIEW = MarketView(Bias.NEUTRAL, 22.0)


def _open_positions(prices: dict[str, Decimal], tag: str) -> list[Managed]:
    books = [PaperBook(balance=D(10000), clock=lambda: datetime(2024, 3, 1, tzinfo=UTC)) for _ in range(15)]
    out: list[Managed] = []
    for i in range(POSITIONS):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        book = books[i // len(SYMBOLS)]
        side = "LONG" if i % 2 == 0 else "SHORT"
        leverage = LEVERAGES[i % len(LEVERAGES)]
        style = ExitStyle.PARTIAL_TRAILING if i % 3 == 0 else ExitStyle.LADDER
        price = prices[symbol]
        amount = amount_to_precision(symbol, NOTIONAL / price)
        entry_side, exit_side = (OrderSide.BUY, OrderSide.SELL) if side == "LONG" else (OrderSide.SELL, OrderSide.BUY)
        book.set_leverage(symbol, leverage)
        book.submit(OrderRequest(f"{tag}-{i}-entry", symbol, entry_side, OrderType.MARKET, amount), price)
        position = book.positions[symbol]
        plan = build_plan(
            ExitContext(
                side=side,
                entry_price=position.entry_price,
                amount=position.amount,
                leverage=leverage,
                symbol=symbol,
                wallet_balance=position.margin,
            ),
            ExitConfig(style=style),
        )
        if not isinstance(plan, ExitPlan):
            raise BenchError(f"position {i} ({symbol} {side} {leverage}x): plan refused: {plan.reason}")
        for n, leg in enumerate(plan.legs):
            if leg.kind is LegKind.TRAILING:
                continue
            kind = OrderType.STOP_MARKET if leg.kind is LegKind.SL else OrderType.TAKE_PROFIT_MARKET
            request = OrderRequest(
                f"{tag}-{i}-leg{n}",
                symbol,
                exit_side,
                kind,
                leg.quantity,
                stop_price=leg.trigger_price,
                reduce_only=True,
            )
            book.submit(request, price)
        trail = plan.trailing_stop() or TrailingStop(side=plan.side, entry_price=plan.entry_price)
        stop = plan.stop_loss.trigger_price
        out.append(
            Managed(
                index=i,
                book=book,
                symbol=symbol,
                side=side,
                original=position.amount,
                plan=plan,
                trail=trail,
                harvest=HarvestPosition(
                    side=Side.LONG if side == "LONG" else Side.SHORT,
                    entry_price=float(plan.entry_price),
                    initial_stop=float(stop),
                    amount=float(position.amount),
                    trend_at_entry=25.0,
                ),
                hstate=HarvestState(),
                stop=stop,
                stop_cid=f"{tag}-{i}-leg{len(plan.legs) - 1}",
            )
        )
    return out


def _update(managed: list[Managed], bars: dict[str, Bar], rates: dict[str, Decimal | None]) -> tuple[int, int]:
    """One mark-price update for every position. Returns (book events, arbiter actions)."""
    events = actions = 0
    for m in managed:
        symbol = m.symbol
        bar = bars[symbol]
        book = m.book
        events += len(book.on_bar(bar, rates[symbol]))
        position = book.positions.get(symbol)
        if position is None:
            continue
        mark = bar.close
        m.trail = trail = m.trail.update(mark)
        proposals = [
            ExitProposal(
                ExitSource.STOP,
                ExitKind.MOVE_STOP,
                "trailing stop",
                stop=price_to_precision(symbol, trail.stop_price) if trail.stop_price is not None else m.stop,
            )
        ]
        harvested, m.hstate = propose(m.harvest, float(mark), THETA, m.hstate, market=VIEW)
        for h in harvested:
            if h.action is HarvestAction.UPDATE_SL:
                assert h.new_stop is not None
                proposals.append(
                    ExitProposal(
                        ExitSource.HARVEST, ExitKind.MOVE_STOP, h.reason, stop=price_to_precision(symbol, h.new_stop)
                    )
                )
            elif h.action is HarvestAction.FULL_CLOSE_PROPOSED:
                proposals.append(ExitProposal(ExitSource.HEAT_GATE, ExitKind.CLOSE, h.reason))
            else:
                assert h.remaining_fraction is not None
                raw = position.amount - _d(h.remaining_fraction) * m.original
                if raw > 0:  # else already reduced that far (e.g. by the TP ladder)
                    cut = amount_to_precision(symbol, raw)
                    proposals.append(ExitProposal(ExitSource.HARVEST, ExitKind.REDUCE, h.reason, amount=cut))
        decided = arbitrate(PositionView(m.side, position.amount, mark, m.stop, m.plan.min_amount), proposals)  # type: ignore[arg-type]
        for action in decided.actions:
            actions += 1
            closing = OrderSide.SELL if m.side == "LONG" else OrderSide.BUY
            m.seq += 1
            if action.kind is ExitKind.MOVE_STOP:
                assert action.stop is not None
                book.cancel(m.stop_cid)
                m.stop_cid = f"{m.stop_cid.split('#')[0]}#{m.seq}"
                request = OrderRequest(
                    m.stop_cid,
                    symbol,
                    closing,
                    OrderType.STOP_MARKET,
                    position.amount,
                    stop_price=action.stop,
                    reduce_only=True,
                )
                book.submit(request, mark)
                m.stop = action.stop
            else:
                request = OrderRequest(
                    f"{m.stop_cid}-x{m.seq}", symbol, closing, OrderType.MARKET, action.amount, reduce_only=True
                )
                book.submit(request, mark)
    return events, actions


def _storm_bars(prices: dict[str, Decimal], open_ms: int) -> dict[str, Bar]:
    return {
        s: Bar(
            s,
            open_ms,
            p,
            price_to_precision(s, p * D("1.03")),
            price_to_precision(s, p * D("0.97")),
            p,
        )
        for s, p in prices.items()
    }


def _update_figure(
    name: str, values_ms: list[float], kind: str, target: bool, note: str
) -> tuple[Figure, dict[str, Any]]:
    stats = spread(values_ms)
    figure = Figure(
        name=name,
        unit="ms/update",
        value=stats["median"],
        stat="median of updates",
        samples=len(values_ms),
        sample_kind=kind,
        p50=stats["p50"],
        p90=stats["p90"],
        p99=stats["p99"],
        target=Target("<=", UPDATE_TARGET_MS) if target else None,
        note=note,
    )
    per_position = {k: round(v * 1000 / POSITIONS, 3) for k, v in stats.items()}
    return figure, {"ms": {k: round(v, 4) for k, v in stats.items()}, "us_per_position": per_position}


def _components(prices: dict[str, Decimal], reps: int) -> dict[str, float]:
    """Median µs per position of each step of a quiet update (a flat bar at the entry price), and of one
    ccxt rounding through app.domains.execution.precision (used by fills and by every stop move)."""
    managed = _open_positions(prices, "c")
    flat = {s: Bar(s, T0, p, p, p, p) for s, p in prices.items()}
    arb = [
        (PositionView(m.side, m.original, flat[m.symbol].close, m.stop, m.plan.min_amount), m)  # type: ignore[arg-type]
        for m in managed
    ]
    steps: dict[str, Callable[[], object]] = {
        "PaperBook.on_bar": lambda: [m.book.on_bar(flat[m.symbol], None) for m in managed],
        "of which PaperPosition.liquidation()": lambda: [m.book.positions[m.symbol].liquidation() for m in managed],
        "TrailingStop.update": lambda: [m.trail.update(flat[m.symbol].close) for m in managed],
        "harvest.propose (with kill score)": lambda: [
            propose(m.harvest, float(flat[m.symbol].close), THETA, m.hstate, market=VIEW) for m in managed
        ],
        "arbitrate (one MOVE_STOP)": lambda: [
            arbitrate(view, [ExitProposal(ExitSource.STOP, ExitKind.MOVE_STOP, "t", stop=m.stop)]) for view, m in arb
        ],
        "precision.price_to_precision (one call)": lambda: [price_to_precision(m.symbol, m.stop) for m in managed],
    }
    out: dict[str, float] = {}
    perf = time.perf_counter_ns
    for name, step in steps.items():
        step()
        samples = []
        for _ in range(reps):
            t0 = perf()
            step()
            samples.append((perf() - t0) / 1000 / POSITIONS)
        out[name] = round(spread(samples)["median"], 2)
    return out


def _monitor_figures(series: Series, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    rounds = 10 if quick else 200
    perf = time.perf_counter_ns
    quiet: list[float] = []
    first_busy: list[float] = []
    replay: list[float] = []
    storm: list[float] = []
    open_in_replay: list[int] = []
    totals = {"events": 0, "actions": 0}
    for r in range(rounds + 1):  # round 0 is the warm-up
        start = T0 + r * SPACING_HOURS * HOUR  # spread over 2024-2025, at every hour of the day
        prices = {s: series.bars[s][start - HOUR].close for s in SYMBOLS}
        managed = _open_positions(prices, f"r{r}")
        gc.collect()
        for u in range(UPDATES_PER_ROUND):
            at = start + u * HOUR
            bars = {s: series.bars[s][at] for s in SYMBOLS}
            rates = {s: series.funding[s].get(at) for s in SYMBOLS}
            still_open = sum(1 for m in managed if m.symbol in m.book.positions)
            t0 = perf()
            events, actions = _update(managed, bars, rates)
            elapsed = (perf() - t0) / 1e6
            if r == 0:
                continue
            totals["events"] += events
            totals["actions"] += actions
            if u == 0:  # all 100 open
                (quiet if events == 0 and actions == 0 else first_busy).append(elapsed)
            else:
                replay.append(elapsed)
                open_in_replay.append(still_open)
        # The stop storm, on fresh books at the same prices.
        managed = _open_positions(prices, f"s{r}")
        gc.collect()
        t0 = perf()
        _update(managed, _storm_bars(prices, start), dict.fromkeys(SYMBOLS))
        elapsed = (perf() - t0) / 1e6
        survivors = sum(1 for m in managed if m.symbol in m.book.positions)
        if survivors:
            raise BenchError(f"stop storm round {r}: {survivors} positions survived a +-3 % bar")
        if r:
            storm.append(elapsed)
    if not quiet:
        raise BenchError("no quiet update: every first bar triggered something")
    figures: list[Figure] = []
    details: dict[str, Any] = {
        "rounds": rounds,
        "positions": POSITIONS,
        "books": 15,
        "first_updates_quiet": len(quiet),
        "first_updates_with_fills_or_actions": len(first_busy),
        "replay_updates": len(replay),
        "replay_mean_open_positions": round(sum(open_in_replay) / len(open_in_replay), 1),
        **totals,
    }
    per_pos = spread(quiet)["median"] * 1000 / POSITIONS
    f, d = _update_figure(
        "composed (+ harvest, not served yet), 100 positions, nothing triggers",
        quiet,
        "updates",
        False,
        f"real 1h bars, 15 books; {per_pos:.1f} µs/position",
    )
    figures.append(f)
    details["quiet"] = d
    if first_busy:
        f, d = _update_figure(
            "monitor update, 100 open positions, some orders trigger",
            first_busy,
            "updates",
            False,
            "real 1h bars where a TP/stop/funding or arbiter action happened",
        )
        figures.append(f)
        details["some_trigger"] = d
    f, d = _update_figure(
        "monitor update, 23 h replay (positions close as they trigger)",
        replay,
        "updates",
        False,
        f"mean {details['replay_mean_open_positions']} positions open",
    )
    figures.append(f)
    details["replay"] = d
    per_pos = spread(storm)["median"] * 1000 / POSITIONS
    f, d = _update_figure(
        "monitor update, all 100 stops fill",
        storm,
        "updates",
        False,
        f"+-3 % bar on every symbol; {per_pos:.0f} µs/position",
    )
    figures.append(f)
    details["stop_storm"] = d
    return figures, details


# --- the served path: PaperExecution.apply_bar --------------------------------------------------------


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the paper venue awaits nothing) without an event loop, so the
    figures are the served code's and not a loop's scheduling."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise BenchError("the paper venue suspended: it should never wait")


class _SeriesFeed:
    """The price feed over the loaded series, at a settable time: `readings` and `reading` ask it for closed
    bars as they ask the replay feed (its cost is a list of dict reads, like a warm replay cache)."""

    name = "bench"

    def __init__(self, series: Series, now: datetime) -> None:
        self._series = series
        self.at = now

    def now(self) -> datetime:
        return self.at

    async def closed_bars(self, symbol: str, after_open_ms: int | None) -> list[Bar]:
        bars = self._series.bars[symbol]
        last = int(self.at.timestamp() * 1000) // HOUR * HOUR - HOUR  # closed by now
        first = (after_open_ms if after_open_ms is not None else last - HOUR) + HOUR
        return [bars[t] for t in range(first - first % HOUR, last + 1, HOUR) if t in bars]


def _served_positions(series: Series, open_ms: int, symbols: tuple[str, ...] = SYMBOLS) -> "PaperExecution":
    """100 positions over `symbols`, opened through the order flow's own calls (the entry's market reading,
    plan_for, open) in one PaperExecution, whose feed then stands at the bar after (the monitor's time)."""
    now = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
    catalog = MarketCatalog.load()
    feed = _SeriesFeed(series, now)
    execution = PaperExecution(feed, catalog, ExecutionConfig(), "bench", lambda: now)  # type: ignore[arg-type]
    for i in range(POSITIONS):
        symbol = symbols[i % len(symbols)]
        side = "LONG" if i % 2 == 0 else "SHORT"
        leverage = Decimal(LEVERAGES[i % len(LEVERAGES)])
        mark = series.bars[symbol][open_ms - HOUR].close
        amount = catalog.resolve(symbol).quantity_for(NOTIONAL, mark)
        plan = execution.plan_for(symbol, side, amount, leverage, mark, None, None)
        if not isinstance(plan, ExitPlan):
            raise BenchError(f"no plan for {symbol} {side} {leverage}x: {plan}")
        trade = {"id": uuid.uuid4(), "symbol": symbol, "side": side, "leverage": leverage, "quantity": amount}
        reading = _sync(execution.reading(symbol))  # as the order flow reads it at entry
        _sync(execution.open(ExecRows(), trade, plan, mark, now, Decimal(10) ** 9, reading))
    for symbol in symbols:  # the monitor read the entry's bar an hour ago: its converted closes are warm
        _sync(execution.readings(symbol, [series.bars[symbol][open_ms - HOUR]]))
    feed.at = now + timedelta(hours=1)  # the bar opening at `open_ms` has closed
    return execution


def _served_update(execution: PaperExecution, bar: Bar, rate: Decimal | None, now: datetime) -> None:
    """One served mark update: the monitor's reading of the bar, then apply_bar with it."""
    reading = _sync(execution.readings(bar.symbol, [bar])).get(bar.open_ms)
    _sync(execution.apply_bar(ExecRows(), bar, rate, now, reading))


def _served_figures(series: Series, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    """What the position monitor runs on the served code: the market reading of the bar
    (`PaperExecution.readings`: the feed's closed bars, the signals' features and regime rule over the last
    READING_BARS bars, closes converted once per bar) and `PaperExecution.apply_bar` with it: the book's
    matching (fills, funding, liquidation), the trailing stops, harvest, the kill score and heat gate, the
    arbiter and the rows the batch will write (the database write itself is not included).

    - One mark-price update over 100 open positions, all on the updated symbol (BTC/USDT:USDT; the worst
      case: every position reacts to it): the first closed bar after they opened. The target applies here.
    - The same with the 100 positions spread over the 7 symbols, one closed bar per symbol (7 updates).
    - A 23 h replay of the spread case, positions closing as their exits fill.
    """
    rounds = 10 if quick else 100
    one_symbol: list[float] = []
    one_symbol_plain: list[float] = []
    spread_first: list[float] = []
    replay: list[float] = []
    perf = time.perf_counter_ns
    btc = ("BTC/USDT:USDT",)
    for r in range(rounds):
        open_ms = T0 + r * SPACING_HOURS * HOUR
        now = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        execution = _served_positions(series, open_ms, btc)
        gc.collect()
        bar = series.bars[btc[0]][open_ms]
        t0 = perf()
        _served_update(execution, bar, series.funding[btc[0]].get(open_ms), now)
        one_symbol.append((perf() - t0) / 1e6)
        execution = _served_positions(series, open_ms, btc)  # the same without a reading: no kill score
        gc.collect()
        t0 = perf()
        _sync(execution.apply_bar(ExecRows(), bar, series.funding[btc[0]].get(open_ms), now, None))
        one_symbol_plain.append((perf() - t0) / 1e6)
        execution = _served_positions(series, open_ms)
        gc.collect()
        for u in range(UPDATES_PER_ROUND):
            at = open_ms + u * HOUR
            bars = [(series.bars[s][at], series.funding[s].get(at)) for s in SYMBOLS if at in series.bars[s]]
            when = datetime.fromtimestamp(at / 1000, tz=UTC)
            execution.feed.at = when + timedelta(hours=1)  # type: ignore[attr-defined]
            t0 = perf()
            for bar, rate in bars:
                _served_update(execution, bar, rate, when)
            elapsed = (perf() - t0) / 1e6
            (spread_first if u == 0 else replay).append(elapsed)
    figures = [
        _update_figure(
            "served: one mark update, 100 open positions on that symbol",
            one_symbol,
            f"{rounds} rounds",
            True,
            "reading + apply_bar: matching, trailing, harvest, kill score, heat gate, arbiter, rows",
        )[0],
        _update_figure(
            "served, without the market reading (no kill score / heat gate)",
            one_symbol_plain,
            f"{rounds} rounds",
            False,
            "the same update with reading=None, same run: what the reading and kill score add",
        )[0],
        _update_figure(
            "served: 100 positions over 7 symbols, one bar each (7 updates)",
            spread_first,
            f"{rounds} rounds",
            False,
            "the first bar after opening, all 100 open",
        )[0],
        _update_figure(
            "served: 7-symbol updates, 23 h replay",
            replay,
            f"{len(replay)} updates",
            False,
            "positions close as their exits fill",
        )[0],
    ]
    return figures, {
        "served_one_symbol_ms": spread(one_symbol),
        "served_one_symbol_without_reading_ms": spread(one_symbol_plain),
        "served_seven_symbols_first_ms": spread(spread_first),
        "served_replay_ms": spread(replay),
    }


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    rounds = 10 if quick else 200
    end = T0 + (rounds + 1) * SPACING_HOURS * HOUR + 2 * UPDATES_PER_ROUND * HOUR
    series = asyncio.run(_load_series(T0 - (READING_BARS + 2) * HOUR, end))
    prices = {s: series.bars[s][T0 - HOUR].close for s in SYMBOLS}
    plan_figures, plan_details = _plan_figures(prices, quick)
    monitor_figures, monitor_details = _monitor_figures(series, quick)
    served_figures, served_details = _served_figures(series, quick)
    monitor_details["served"] = served_details
    monitor_details["us_per_position_by_step"] = _components(prices, 20 if quick else 200)
    details = {**plan_details, "monitor": monitor_details, "prices_at_t0": {s: str(p) for s, p in prices.items()}}
    return plan_figures + served_figures + monitor_figures, details


if __name__ == "__main__":
    figures, details = run("--quick" in sys.argv)
    for f in figures:
        print(f"{f.name}: {f.value:.3f} {f.unit} (p90 {f.p90:.3f}, p99 {f.p99:.3f}; target {f.target}) {f.note}")
    print(json.dumps(details, indent=1, default=str))
