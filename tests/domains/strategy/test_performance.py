"""Strategy Brain statistics against values computed by hand on fixed trade lists."""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.domains.strategy.performance import (
    MANUAL,
    ClosedTrade,
    Performance,
    group_by_source,
    max_drawdown,
    performance,
    recommend,
    trades_per_year,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = Decimal(1000)


def trades(
    pnls: list[str], *, margin: str = "100", days: list[float] | None = None, source: str = "s"
) -> list[ClosedTrade]:
    """One trade per pnl, closed one day apart unless `days` says when (days after T0)."""
    days = days if days is not None else [float(i) for i in range(len(pnls))]
    return [
        ClosedTrade(source, Decimal(p), Decimal(margin), T0 + timedelta(days=d))
        for p, d in zip(pnls, days, strict=True)
    ]


def perf(pnls: list[str], days: list[float] | None = None) -> Performance:
    return performance("s", trades(pnls, days=days), BASE)


def test_mixed_trades_every_metric_by_hand() -> None:
    # returns r = pnl / 100: 0.10, -0.05, 0.20, -0.10; closes on days 0..3: N = 3 * 365 / 3 = 365
    p = perf(["10", "-5", "20", "-10"])
    assert (p.trades, p.wins, p.losses, p.breakeven) == (4, 2, 2, 0)
    assert p.win_rate == 0.5 and p.loss_rate == 0.5
    assert (p.gross_profit, p.gross_loss, p.net_pnl) == (Decimal(30), Decimal(15), Decimal(15))
    assert p.profit_factor == 2.0
    assert (p.avg_win, p.avg_loss) == (Decimal(15), Decimal("7.5"))
    assert p.expectancy == Decimal("3.75")  # 15 * 0.5 - 7.5 * 0.5 = net 15 / 4 trades
    assert p.trades_per_year == pytest.approx(365.0)
    assert p.mean_return == pytest.approx(0.0375)
    # deviations from 0.0375: 0.0625, -0.0875, 0.1625, -0.1375; squares sum 0.056875; / (n - 1) = 3
    assert p.std_return == pytest.approx(math.sqrt(0.056875 / 3))
    assert p.sharpe == pytest.approx(0.0375 / math.sqrt(0.056875 / 3) * math.sqrt(365))
    assert p.sharpe == pytest.approx(5.203285, rel=1e-6)
    # downside: (0.05^2 + 0.10^2) / 4 = 0.003125
    assert p.downside_deviation == pytest.approx(math.sqrt(0.003125))
    assert p.sortino == pytest.approx(0.0375 / math.sqrt(0.003125) * math.sqrt(365))
    assert p.sortino == pytest.approx(12.816006, rel=1e-6)
    # equity 1000, 1010, 1005, 1025, 1015: deepest fall 10 from the peak 1025
    assert p.max_drawdown == Decimal(10)
    assert p.max_drawdown_pct == pytest.approx(10 / 1025 * 100)
    assert (p.first_closed_at, p.last_closed_at) == (T0, T0 + timedelta(days=3))
    assert p.notes == ()


def test_all_losses() -> None:
    # r = -0.1, -0.2; closes 2 days apart: N = 1 * 365 / 2 = 182.5
    p = perf(["-10", "-20"], days=[0, 2])
    assert (p.wins, p.losses, p.win_rate, p.loss_rate) == (0, 2, 0.0, 1.0)
    assert p.profit_factor == 0.0
    assert p.avg_win is None and p.avg_loss == Decimal(15)
    assert p.expectancy == Decimal(-15)
    assert p.trades_per_year == pytest.approx(182.5)
    assert p.std_return == pytest.approx(math.sqrt(0.005))  # (0.05^2 * 2) / 1
    assert p.sharpe == pytest.approx(-0.15 / math.sqrt(0.005) * math.sqrt(182.5))
    assert p.sharpe == pytest.approx(-28.657460, rel=1e-6)
    assert p.downside_deviation == pytest.approx(math.sqrt(0.025))  # (0.01 + 0.04) / 2
    assert p.sortino == pytest.approx(-0.15 / math.sqrt(0.025) * math.sqrt(182.5))
    assert (p.max_drawdown, p.max_drawdown_pct) == (Decimal(30), pytest.approx(3.0))  # 1000 -> 970


def test_all_wins_profit_factor_and_sortino_are_infinite() -> None:
    p = perf(["10", "20"])  # r = 0.1, 0.2, one day apart: N = 365
    assert p.profit_factor == math.inf and p.sortino == math.inf
    assert p.loss_rate == 0.0 and p.avg_loss is None and p.expectancy == Decimal(15)
    assert p.sharpe == pytest.approx(0.15 / math.sqrt(0.005) * math.sqrt(365))
    assert p.downside_deviation == 0.0
    assert (p.max_drawdown, p.max_drawdown_pct) == (Decimal(0), 0.0)
    assert any(n.startswith("profit_factor: no losing trade") for n in p.notes)
    assert any(n.startswith("sortino: no losing trade") for n in p.notes)


def test_zero_standard_deviation_leaves_sharpe_undefined() -> None:
    p = perf(["10", "10", "10"])  # r = 0.1 three times: std exactly 0 (no rounding dust)
    assert p.std_return == 0.0
    assert p.sharpe is None
    assert p.sortino == math.inf
    assert any("standard deviation 0" in n for n in p.notes)


def test_one_trade_has_no_frequency_sharpe_or_sortino() -> None:
    p = performance("s", trades(["5"], margin="50"), BASE)
    assert (p.trades, p.win_rate, p.mean_return) == (1, 1.0, pytest.approx(0.1))
    assert p.std_return is None and p.trades_per_year is None
    assert p.sharpe is None and p.sortino is None
    assert p.profit_factor == math.inf
    assert any("one trade" in n for n in p.notes)


def test_breakeven_trades_count_in_n_only() -> None:
    p = perf(["0", "0"])
    assert (p.wins, p.losses, p.breakeven) == (0, 0, 2)
    assert p.profit_factor is None and p.expectancy == 0
    assert p.sharpe is None and p.sortino is None
    assert any("0 / 0" in n for n in p.notes) and any("every return is 0" in n for n in p.notes)
    mixed = perf(["10", "0", "-4"])
    assert (mixed.win_rate, mixed.loss_rate) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert mixed.expectancy == Decimal(2)  # 10 * 1/3 - 4 * 1/3


def test_same_instant_closes_cannot_be_annualized() -> None:
    p = perf(["10", "-5"], days=[1, 1])
    assert p.trades_per_year is None and p.sharpe is None and p.sortino is None
    assert p.std_return == pytest.approx(math.sqrt(0.01125))  # deviations 0.075, -0.075; / 1
    assert any("same instant" in n for n in p.notes)


def test_trades_are_ordered_by_close_for_the_drawdown() -> None:
    closed = trades(["-10", "20"], days=[1, 0])  # the +20 closed first: 1000, 1020, 1010
    assert performance("s", closed, BASE).max_drawdown == Decimal(10)


def test_drawdown_absolute_and_percent_peak_at_different_times() -> None:
    # equity 1000 -> 900 (10 %), -> 2000, -> 1850 (150 abs, 7.5 %)
    worst, pct = max_drawdown([Decimal(-100), Decimal(1100), Decimal(-150)], BASE)
    assert worst == Decimal(150) and pct == pytest.approx(10.0)


def test_trades_per_year_formula() -> None:
    closes = [T0, T0 + timedelta(hours=12), T0 + timedelta(days=2)]
    assert trades_per_year(closes) == pytest.approx(2 * 365 / 2)
    assert trades_per_year(closes[:1]) is None


def test_no_source_is_grouped_as_manual() -> None:
    groups = group_by_source([ClosedTrade("", Decimal(1), Decimal(1), T0), *trades(["1"], source="ensemble")])
    assert set(groups) == {MANUAL, "ensemble"}


def test_empty_trade_list_is_refused() -> None:
    with pytest.raises(ValueError):
        performance("s", [], BASE)


# Recommendations --------------------------------------------------------------------------------


def named(name: str, pnls: list[str]) -> Performance:
    return performance(name, trades(pnls, source=name), BASE)


def test_recommendations_rank_disable_and_weigh() -> None:
    # better: r = 0.2, -0.05, 0.2 -> mean 0.35/3; good: 0.1, -0.05, 0.1 -> mean 0.15/3. Same downside
    # deviation sqrt(0.05^2 / 3) and N = 365, so the Sortinos are in the ratio of the means: 0.7 : 0.3
    better, good = named("better", ["20", "-5", "20"]), named("good", ["10", "-5", "10"])
    bad, few = named("bad", ["-10", "5", "-10"]), named("few", ["10", "10"])
    dd = math.sqrt(0.0025 / 3)
    assert better.sortino == pytest.approx(0.35 / 3 / dd * math.sqrt(365))
    assert good.sortino == pytest.approx(0.15 / 3 / dd * math.sqrt(365))

    r = recommend([few, bad, good, better], min_trades=3)
    assert r.primary == "better" and r.fallbacks == ("good",)
    assert "highest annualized Sortino" in r.primary_reason
    assert r.disable == (("bad", "expectancy -5 USDT per trade < 0; profit factor 0.25 < 1"),)
    assert r.weights == {"better": pytest.approx(0.7), "good": pytest.approx(0.3)}
    assert sum(r.weights.values()) == pytest.approx(1.0)
    assert "minimum sample 3 trades" in r.weights_reason
    by_name = {a.performance.strategy: a for a in r.strategies}
    assert by_name["few"].qualified is False
    assert by_name["few"].reason.startswith("only 2 closed trades, fewer than the minimum 3")
    assert all(by_name[n].qualified for n in ("better", "good", "bad"))


def test_unbounded_sortino_ranks_first_and_shares_the_weight() -> None:
    perfect, good = named("perfect", ["1", "1", "2"]), named("good", ["10", "-5", "10"])
    r = recommend([good, perfect], min_trades=3)
    assert r.primary == "perfect" and r.fallbacks == ("good",)
    assert "unbounded" in r.primary_reason
    assert r.weights == {"perfect": 1.0, "good": 0.0}
    assert "perfect had no losing trade" in r.weights_reason


def test_below_the_default_minimum_nothing_is_recommended() -> None:
    r = recommend([named("a", ["10", "-5", "10"] * 9)])  # 27 trades < 30
    assert r.min_trades == 30
    assert r.primary is None and r.fallbacks == () and r.disable == () and r.weights == {}
    assert r.primary_reason == "no strategy has at least 30 closed trades: no primary"
    assert "no strategy has at least 30 closed trades" in r.weights_reason
    assert r.strategies[0].qualified is False
    assert recommend([named("a", ["10", "-5", "10"] * 10)]).primary == "a"  # 30 trades


def test_every_qualified_strategy_disabled() -> None:
    r = recommend([named("bad", ["-10", "5", "-10"])], min_trades=3)
    assert r.primary is None and r.weights == {}
    assert r.primary_reason.startswith("every qualified strategy is disabled")


def test_zero_expectancy_is_a_fallback_without_weight() -> None:
    flat, good = named("flat", ["10", "-10", "10", "-10"]), named("good", ["10", "-5", "10", "5"])
    r = recommend([flat, good], min_trades=3)
    assert r.disable == ()  # expectancy 0, profit factor 1: not negative
    assert r.primary == "good" and r.fallbacks == ("flat",)
    assert r.weights == {"good": 1.0}


def test_sortino_that_cannot_be_annualized_gets_no_weight() -> None:
    instant = performance("instant", trades(["10", "-5", "10"], days=[0, 0, 0], source="instant"), BASE)
    good = named("good", ["10", "-5", "10"])
    r = recommend([instant, good], min_trades=3)
    assert r.primary == "good" and r.fallbacks == ("instant",)
    assert r.weights == {"good": 1.0, "instant": 0.0}
    assert "Sortino cannot be annualized" in r.weights_reason
    alone = recommend([instant], min_trades=3)
    assert alone.primary == "instant" and alone.weights == {}
