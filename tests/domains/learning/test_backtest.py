"""The served rule, scored: hand-computed trades on a few synthetic candles, and no look-ahead."""

import math
from dataclasses import replace

import numpy as np
import pytest

from app.core.settings import Settings
from app.domains.exits.plan import ExitConfig
from app.domains.learning.backtest import (
    STOP_LOSS,
    TAKE_PROFIT,
    SymbolMarket,
    SymbolRun,
    TradeRule,
    breakeven_probability,
    constant_side,
    default_min_confidence,
    first_only,
    portfolio_metrics,
    rule_breakeven,
    run_rule,
    score_baselines,
    served_barriers,
    served_side,
    simulate,
    skill_metrics,
    symbol_market,
)
from app.domains.learning.dataset import SymbolRows
from app.domains.markets.candles import Candles, Funding
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from app.domains.signals.decision import decide
from app.domains.signals.features import compute_features
from app.domains.signals.labels import HOLD, LONG, SHORT

HOUR = 3_600_000
FREE = TradeRule(min_confidence=0.0, fee_rate=0.0, slippage=0.0, max_hold_bars=None, volatility_scaled=False)


def labelled_rows(symbol: str, timestamp: np.ndarray, y: np.ndarray) -> SymbolRows:
    """Rows carrying only what the served-rule evaluation reads (times, labels); the model inputs are zeros."""
    n = len(y)
    z = np.zeros(n)
    return SymbolRows(
        symbol, timestamp, np.zeros((n, 1)), np.zeros((n, 1, 1)), y, np.zeros((n, 1)), z, z, np.zeros(n, dtype=np.int64)
    )


def candles(ohlc: list[tuple[float, float, float, float]], start_ms: int = 0) -> Candles:
    a = np.array(ohlc, dtype=np.float64)
    ts = start_ms + np.arange(len(a), dtype=np.int64) * HOUR
    return Candles("BTC/USDT:USDT", "1h", ts, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(len(a)))


def market(c: Candles, funding: Funding | None = None) -> SymbolMarket:
    return SymbolMarket(c, funding, compute_features(c, funding), 0, len(c))


FLAT = (100.0, 100.5, 99.5, 100.0)


def test_defaults_come_from_the_exit_plan_and_the_active_profile() -> None:
    assert (ExitConfig().tp_distances[0], ExitConfig().sl_distance) == (TAKE_PROFIT, STOP_LOSS)
    assert default_min_confidence() == float(DEFAULT_PROFILES[RiskMode.NORMAL].global_min_confidence)
    assert TradeRule().min_confidence == default_min_confidence()
    assert default_min_confidence("DEFENSIVE") == float(DEFAULT_PROFILES[RiskMode.DEFENSIVE].global_min_confidence)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert TradeRule().fee_rate == float(settings.taker_fee_rate)
    assert TradeRule().slippage == float(settings.paper_slippage_pct) / 100


def test_entry_is_at_the_next_candles_open() -> None:
    c = candles([(99.0, 100.5, 98.5, 100.0), (101.0, 101.5, 100.5, 101.2), FLAT])
    run = simulate(market(c), first_only("LONG", 0), replace(FREE, max_hold_bars=1))
    (trade,) = run.trades
    assert trade.decided_ms == 0 and trade.entry_ms == HOUR
    assert trade.entry_price == 101.0  # the open of candle 1, not the close (100) the call was made at
    assert (trade.exit_price, trade.reason, trade.bars) == (101.2, "max_hold", 1)
    assert trade.net_return == pytest.approx(101.2 / 101.0 - 1)


def test_take_profit_first() -> None:
    c = candles([FLAT, FLAT, (100.0, 102.0, 99.5, 101.5), FLAT])
    (trade,) = simulate(market(c), first_only("LONG", 0), FREE).trades
    assert trade.reason == "take_profit" and trade.exit_price == pytest.approx(100 * (1 + TAKE_PROFIT))
    assert trade.net_return == pytest.approx(TAKE_PROFIT)
    assert trade.exit_ms == 2 * HOUR and trade.bars == 2


def test_the_live_plans_atr_and_regime_scaled_levels_are_where_the_trade_exits() -> None:
    """With an ATR (14 closed candles), TP1 = 1.95 x ATR x the regime's scale and SL = 2 x ATR over the entry, as
    `build_plan` sets them live: flat candles of range 1.0 at 100 read RANGING (scale 0.8): TP1 +1.56 %, SL -2 %."""
    flat = [FLAT] * 30
    rule = replace(FREE, volatility_scaled=True)
    up = candles([*flat, (100.0, 101.6, 99.9, 101.0), FLAT])
    m = market(up)
    tp, sl = m.distances(served_barriers(rule))
    assert tp[29] == pytest.approx(0.0156) and sl[29] == pytest.approx(0.02)
    (trade,) = simulate(m, first_only("LONG", 29), rule).trades
    assert trade.reason == "take_profit" and trade.exit_price == pytest.approx(101.56)
    (ladder,) = simulate(market(up), first_only("LONG", 29), FREE).trades  # the static ladder: TP1 +1.95 % not hit
    assert ladder.reason == "window_end"
    down = candles([*flat, (100.0, 100.2, 97.9, 98.5), FLAT])
    (stopped,) = simulate(market(down), first_only("LONG", 29), rule).trades
    assert stopped.reason == "stop_loss" and stopped.exit_price == pytest.approx(98.0)


def test_stop_first() -> None:
    c = candles([FLAT, FLAT, (100.0, 100.5, 97.9, 98.5), FLAT])
    (trade,) = simulate(market(c), first_only("LONG", 0), FREE).trades
    assert trade.reason == "stop_loss" and trade.exit_price == pytest.approx(98.0)
    assert trade.net_return == pytest.approx(-STOP_LOSS)


def test_both_levels_inside_one_candle_count_as_the_stop() -> None:
    c = candles([FLAT, FLAT, (100.0, 102.5, 97.5, 101.0), FLAT])
    (trade,) = simulate(market(c), first_only("LONG", 0), FREE).trades
    assert trade.reason == "stop_loss" and trade.exit_price == pytest.approx(98.0)
    (short,) = simulate(market(c), first_only("SHORT", 0), FREE).trades
    assert short.reason == "stop_loss" and short.exit_price == pytest.approx(102.0)
    assert short.net_return == pytest.approx(-STOP_LOSS)


def test_a_gap_through_the_stop_exits_at_the_open() -> None:
    c = candles([FLAT, FLAT, (97.0, 97.5, 96.0, 96.5), FLAT])
    (trade,) = simulate(market(c), first_only("LONG", 0), FREE).trades
    assert (trade.reason, trade.exit_price) == ("stop_loss", 97.0)
    assert trade.net_return == pytest.approx(-0.03)


def test_a_gap_through_the_target_fills_at_the_trigger_as_the_paper_exchange_does() -> None:
    c = candles([FLAT, FLAT, (97.0, 97.5, 96.0, 96.5), FLAT])
    (trade,) = simulate(market(c), first_only("SHORT", 0), FREE).trades
    assert (trade.reason, trade.exit_price) == ("take_profit", pytest.approx(100 * (1 - TAKE_PROFIT)))
    assert trade.net_return == pytest.approx(TAKE_PROFIT)


def test_short_take_profit() -> None:
    c = candles([FLAT, FLAT, (100.0, 100.4, 98.0, 98.2), FLAT])
    (trade,) = simulate(market(c), first_only("SHORT", 0), FREE).trades
    assert trade.reason == "take_profit" and trade.exit_price == pytest.approx(100 * (1 - TAKE_PROFIT))
    assert trade.net_return == pytest.approx(TAKE_PROFIT)


def test_max_hold_exits_at_that_candles_close() -> None:
    c = candles([FLAT, FLAT, (100.0, 101.0, 99.0, 100.7), (100.7, 101.0, 99.5, 100.9), FLAT, FLAT])
    (trade,) = simulate(market(c), first_only("LONG", 0), replace(FREE, max_hold_bars=3)).trades
    assert (trade.reason, trade.exit_ms, trade.bars, trade.exit_price) == ("max_hold", 3 * HOUR, 3, 100.9)


def test_the_window_end_closes_an_open_position() -> None:
    c = candles([FLAT, FLAT, FLAT])
    run = simulate(market(c), first_only("LONG", 0), FREE)
    (trade,) = run.trades
    assert (trade.reason, trade.exit_ms, trade.exit_price) == ("window_end", 2 * HOUR, 100.0)
    assert run.in_position.tolist() == [False, True, True]


def test_fees_slippage_and_funding_arithmetic() -> None:
    fee, slip, rate = 0.0004, 0.001, 0.0001
    c = candles([FLAT, (100.0, 100.6, 99.6, 100.4), (100.5, 101.2, 100.2, 101.0), FLAT])
    # settlements: at the entry candle's open (not held yet), at candle 2's open (held), at candle 3's
    # open (the position closed at candle 2's close, before it)
    funding = Funding("BTC/USDT:USDT", np.array([HOUR, 2 * HOUR, 3 * HOUR], dtype=np.int64), np.full(3, rate))
    rule = TradeRule(min_confidence=0.0, fee_rate=fee, slippage=slip, max_hold_bars=2)
    (long,) = simulate(market(c, funding), first_only("LONG", 0), rule).trades
    entry, exit_ = 100.0 * (1 + slip), 101.0 * (1 - slip)
    assert (long.entry_price, long.exit_price) == (pytest.approx(entry), pytest.approx(exit_))
    assert long.funding == pytest.approx(rate * 100.5 / entry)
    assert long.fees == pytest.approx(fee + fee * exit_ / entry)
    assert long.net_return == pytest.approx(exit_ / entry - 1 - fee - fee * exit_ / entry - rate * 100.5 / entry)
    (short,) = simulate(market(c, funding), first_only("SHORT", 0), rule).trades
    s_entry, s_exit = 100.0 * (1 - slip), 101.0 * (1 + slip)
    assert short.funding == pytest.approx(-rate * 100.5 / s_entry)  # shorts receive a positive rate
    assert short.net_return == pytest.approx(
        1 - s_exit / s_entry - fee - fee * s_exit / s_entry + rate * 100.5 / s_entry
    )


def test_one_position_at_a_time_and_reentry_after_the_exit() -> None:
    c = candles([FLAT] * 8)
    run = simulate(market(c), constant_side("LONG"), replace(FREE, max_hold_bars=2))
    spans = [(t.entry_ms // HOUR, t.exit_ms // HOUR, t.decided_ms // HOUR) for t in run.trades]
    # decided at 0, in at 1, out at the close of 2; decided at 2 (flat by then), in at 3, ...
    assert spans == [(1, 2, 0), (3, 4, 2), (5, 6, 4), (7, 7, 6)]
    assert run.trades[-1].reason == "window_end"


def test_equity_compounds_and_marks_at_every_close() -> None:
    c = candles([FLAT, FLAT, (100.0, 102.0, 99.5, 101.5), (101.0, 101.2, 100.0, 101.0), FLAT])
    run = simulate(market(c), first_only("LONG", 0), FREE)
    assert run.equity == pytest.approx([1.0, 1.0, 1 + TAKE_PROFIT, 1 + TAKE_PROFIT, 1 + TAKE_PROFIT])


def test_portfolio_metrics_by_hand() -> None:
    day = 24
    ts = np.arange(3 * day, dtype=np.int64) * HOUR
    flat = candles([FLAT] * (3 * day))
    a = np.repeat([1.1, 0.99, 1.089], day)
    runs = [
        SymbolRun([], a, np.zeros(3 * day, dtype=bool)),
        SymbolRun([], np.ones(3 * day), np.zeros(3 * day, dtype=bool)),
    ]
    markets = [market(flat), market(flat)]
    assert (markets[0].window == ts).all()
    m = portfolio_metrics(markets, runs)
    closes = np.array([1.0, 1.05, 0.995, 1.0445])
    daily = closes[1:] / closes[:-1] - 1
    assert m["net_return"] == pytest.approx(0.0445)
    assert m["max_drawdown"] == pytest.approx(1 - 0.995 / 1.05)
    assert m["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365))
    assert m["trades"] == 0 and m["win_rate"] is None


def test_always_hold_makes_no_trades_and_buy_and_hold_pays_fees() -> None:
    c = candles([FLAT, (100.0, 103.0, 99.0, 102.0), (102.0, 106.0, 101.0, 105.0)])
    rows = labelled_rows("BTC/USDT:USDT", c.timestamp, np.array([LONG, LONG, HOLD]))
    rule = TradeRule(min_confidence=0.65, fee_rate=0.001, slippage=0.0)
    base = score_baselines([market(c)], rows, np.array([0.2, 0.5, 0.3]), rule)
    assert base["always_hold"]["trades"] == 0 and base["always_hold"]["net_return"] == 0.0
    buy = base["buy_and_hold"]
    assert buy["trades"] == 1 and buy["exits_window_end"] == 1  # no TP/SL for buy-and-hold
    assert buy["net_return"] == pytest.approx(105 / 100 - 1 - 0.001 - 0.001 * 1.05)
    # the prior's majority direction is LONG (0.3 > 0.2), under the same rule: in at candle 1's open, TP1
    # inside it; called again at its close, in at candle 2's open (102), TP1 (103.99) inside that one too
    assert base["prior"]["trades"] == 2 and base["prior"]["exits_take_profit"] == 2


def test_skill_separates_direction_from_volatility() -> None:
    y = np.array([LONG, SHORT, HOLD, LONG])
    p = np.array([[0.1, 0.3, 0.6], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3], [0.3, 0.2, 0.5]])
    m = skill_metrics(p, y)
    up = np.array([0.6 / 0.7, 0.2 / 0.3, 0.5 / 0.8])
    assert m["direction_accuracy"] == pytest.approx(2 / 3)  # the SHORT row was called up
    assert m["direction_log_loss"] == pytest.approx(-np.mean(np.log([up[0], 1 - up[1], up[2]])))
    assert m["up_share"] == pytest.approx(2 / 3) and m["moved_share"] == 0.75
    p_move = 1 - p[:, HOLD]
    assert m["move_log_loss"] == pytest.approx(-np.mean(np.log([p_move[0], p_move[1], 1 - p_move[2], p_move[3]])))
    # moved rows score 0.7, 0.3, 0.8 against the HOLD row's 0.6: two of three pairs ranked right
    assert m["move_auc"] == pytest.approx(2 / 3)
    assert skill_metrics(np.tile([0.3, 0.4, 0.3], (4, 1)), y)["move_auc"] == 0.5


def _toy_probabilities(c: Candles) -> np.ndarray:
    """A 'model' from each candle's own features: leans with the last 4 h return."""
    f = compute_features(c)
    lean = np.nan_to_num(f.column("ret_4")) * 60
    logits = np.column_stack([-lean, np.zeros(len(c)), lean])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def test_served_side_is_decide_then_the_minimum_confidence(btc_candles: Candles) -> None:
    c = btc_candles.slice(0, 1500)
    p = _toy_probabilities(c)
    features = compute_features(c)
    rows = np.arange(len(c), dtype=np.int64)
    side = served_side(p, rows, features, 0.6)
    seen = set()
    for t in range(800, 1500):
        d = decide(p[t], features, t)
        expected = d.side if d.confidence >= 0.6 else "HOLD"
        assert side(t) == expected
        seen.add((d.side, d.confidence >= 0.6))
    assert len(seen) >= 3  # the case covers calls kept and calls dropped


def test_perturbing_the_future_changes_nothing_up_to_t(btc_candles: Candles) -> None:
    c = btc_candles.slice(0, 1500)
    t = 1200
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.9, 1.1, size=len(c) - t - 1)
    after = np.s_[t + 1 :]

    def perturbed(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[after] *= noise
        return out

    high, low = c.high.copy(), c.low.copy()
    high[after] = np.maximum.reduce([perturbed(c.open), perturbed(c.high), perturbed(c.close)])[after] * 1.001
    low[after] = np.minimum.reduce([perturbed(c.open), perturbed(c.low), perturbed(c.close)])[after] * 0.999
    future = Candles(c.symbol, c.timeframe, c.timestamp, perturbed(c.open), high, low, perturbed(c.close), c.volume)
    rows = np.arange(len(c), dtype=np.int64)
    rule = TradeRule(min_confidence=0.4, max_hold_bars=12)
    runs = []
    for candle_set in (c, future):
        m = symbol_market(candle_set, None, int(c.timestamp[800]), int(c.timestamp[-1]) + 1)
        side = served_side(_toy_probabilities(candle_set), rows, m.features, rule.min_confidence)
        runs.append(([side(k) for k in range(800, t + 1)], simulate(m, side, rule)))
    (sides, run), (sides_future, run_future) = runs
    assert sides == sides_future  # every call up to t
    done = [tr for tr in run.trades if tr.exit_ms < c.timestamp[t + 1]]
    assert len(done) >= 3 and done == [tr for tr in run_future.trades if tr.exit_ms < c.timestamp[t + 1]]
    assert (run.equity[: t - 800 + 1] == run_future.equity[: t - 800 + 1]).all()
    # a call at t enters at the open of t + 1: perturb every later candle but keep that open
    keep_open = Candles(
        c.symbol,
        c.timeframe,
        c.timestamp,
        np.r_[c.open[: t + 2], future.open[t + 2 :]],
        high,
        low,
        future.close,
        c.volume,
    )
    keep_open = replace(
        keep_open, high=np.maximum(keep_open.high, keep_open.open), low=np.minimum(keep_open.low, keep_open.open)
    )
    original = simulate(
        symbol_market(c, None, int(c.timestamp[t]), int(c.timestamp[-1]) + 1), first_only("LONG", t), rule
    )
    moved = simulate(
        symbol_market(keep_open, None, int(c.timestamp[t]), int(c.timestamp[-1]) + 1), first_only("LONG", t), rule
    )
    assert original.trades[0].entry_price == moved.trades[0].entry_price == c.open[t + 1] * (1 + rule.slippage)
    assert original.trades[0].decided_ms == moved.trades[0].decided_ms == c.timestamp[t]


def test_run_rule_splits_capital_between_symbols() -> None:
    up = candles([FLAT, FLAT, (100.0, 102.0, 99.5, 101.5), FLAT])
    flat = candles([FLAT] * 4)
    metrics, runs = run_rule([market(up), market(flat)], [first_only("LONG", 0), constant_side("HOLD")], FREE)
    assert metrics["net_return"] == pytest.approx(TAKE_PROFIT / 2)
    assert metrics["trades"] == 1 and metrics["win_rate"] == 1.0
    assert metrics["turnover"] == pytest.approx((1 + (1 + TAKE_PROFIT)) / 2)
    assert len(runs[1].trades) == 0


def test_trade_t_stat_is_the_mean_trade_over_its_standard_error() -> None:
    c = candles([FLAT, FLAT, (100.0, 102.0, 99.5, 101.5), (100.0, 100.5, 97.9, 98.5), FLAT])
    metrics, (run,) = run_rule([market(c)], [constant_side("LONG")], FREE)
    returns = np.array([TAKE_PROFIT, -STOP_LOSS, 0.0])
    assert [t.reason for t in run.trades] == ["take_profit", "stop_loss", "window_end"]
    assert [t.net_return for t in run.trades] == pytest.approx(returns)
    assert metrics["trade_t_stat"] == pytest.approx(returns.mean() / returns.std(ddof=1) * math.sqrt(3))
    assert metrics["win_rate"] == pytest.approx(1 / 3)


def test_the_breakeven_is_at_the_median_distances_of_the_windows_decisions() -> None:
    m = market(candles([FLAT] * 40))  # ATR 1.0 at 100, ranging: TP1 1.56 %, SL 2 % once 14 ranges exist
    rule = TradeRule(fee_rate=0.0004, slippage=0.0002)
    p, tp, sl = rule_breakeven(rule, [m])
    assert (tp, sl) == (pytest.approx(0.0156), pytest.approx(0.02))
    assert p == breakeven_probability(tp, sl, rule.fee_rate, rule.slippage)
    ladder = replace(rule, volatility_scaled=False)
    assert rule_breakeven(ladder, [m]) == (
        breakeven_probability(TAKE_PROFIT, STOP_LOSS, rule.fee_rate, rule.slippage),
        TAKE_PROFIT,
        STOP_LOSS,
    )
    assert p is not None and p > rule_breakeven(ladder, [m])[0]  # narrower barriers: fees weigh more
