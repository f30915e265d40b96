"""Risk Brain math against hand-computed values on fixed series and against scipy.stats."""

import math
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats

from app.domains.riskbrain.metrics import (
    Exposure,
    Position,
    ReturnMetrics,
    RiskBrainConfig,
    RiskLevel,
    actions,
    assess,
    drawdowns,
    exposure,
    hill_tail_index,
    historical_var_es,
    level_of,
    monte_carlo_var_es,
    parametric_var_es,
    return_metrics,
    score_components,
    simple_returns,
)

CONFIG = RiskBrainConfig()


def test_historical_var_is_the_ceil_n_a_order_statistic() -> None:
    losses = np.arange(1, 21) / 100  # 0.01 .. 0.20, n = 20
    var95, es95 = historical_var_es(losses, 0.95)
    assert var95 == pytest.approx(0.19)  # L_(ceil(19)) = L_(19)
    assert es95 == pytest.approx((0.19 + 0.20) / 2)
    var99, es99 = historical_var_es(losses, 0.99)
    assert var99 == pytest.approx(0.20)  # L_(ceil(19.8)) = L_(20)
    assert es99 == pytest.approx(0.20)


def test_historical_es_counts_ties_with_var() -> None:
    losses = np.array([5.0, 3.0, 1.0, 3.0, 2.0])  # sorted 1 2 3 3 5
    assert historical_var_es(losses, 0.5) == pytest.approx((3.0, 11 / 3))  # L_(3)
    assert historical_var_es(losses, 0.7) == pytest.approx((3.0, 11 / 3))  # L_(4), its tie L_(3) counts too


@pytest.mark.parametrize("n", [30, 97, 1000, 10_001])
@pytest.mark.parametrize("level", [0.95, 0.99])
def test_historical_var_matches_numpy_inverted_cdf(n: int, level: float) -> None:
    losses = np.random.default_rng(n).standard_t(3, n) / 100
    var, es = historical_var_es(losses, level)
    expected = float(np.quantile(losses, level, method="inverted_cdf"))
    assert var == expected
    assert es == pytest.approx(float(losses[losses >= expected].mean()))


def test_parametric_normal_var_and_es() -> None:
    mu, sigma = 0.001, 0.02
    var95, es95 = parametric_var_es(mu, sigma, 0.95)
    assert var95 == pytest.approx(-0.001 + 0.02 * 1.6448536269514722)
    assert es95 == pytest.approx(-0.001 + 0.02 * 0.10313564037537128 / 0.05)
    for level in (0.95, 0.99):
        var, es = parametric_var_es(mu, sigma, level)
        loss = stats.norm(loc=-mu, scale=sigma)
        assert var == pytest.approx(loss.ppf(level))
        assert es == pytest.approx(loss.expect(lambda x: x, lb=var) / (1 - level), rel=1e-6)


def test_monte_carlo_converges_to_the_normal_and_is_seeded() -> None:
    mu, sigma = 0.0005, 0.01
    first = monte_carlo_var_es(mu, sigma, 200_000, seed=3)
    assert first == monte_carlo_var_es(mu, sigma, 200_000, seed=3)
    assert first != monte_carlo_var_es(mu, sigma, 200_000, seed=4)
    for level, (var, es) in first.items():
        exact_var, exact_es = parametric_var_es(mu, sigma, level)
        assert var == pytest.approx(exact_var, rel=0.02)
        assert es == pytest.approx(exact_es, rel=0.02)


def test_skewness_and_excess_kurtosis_are_the_unbiased_g1_g2() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0, -0.05, 0.02, 0.01, -0.01] * 4 + [0.08, -0.09])
    metrics = return_metrics(r, np.cumprod(np.concatenate(([100.0], 1 + r))), CONFIG)
    n = r.size
    d = r - r.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3
    assert metrics.skewness == pytest.approx(g1 * math.sqrt(n * (n - 1)) / (n - 2))
    assert metrics.excess_kurtosis == pytest.approx(((n + 1) * g2 + 6) * (n - 1) / ((n - 2) * (n - 3)))
    assert metrics.skewness == pytest.approx(stats.skew(r, bias=False))
    assert metrics.excess_kurtosis == pytest.approx(stats.kurtosis(r, fisher=True, bias=False))
    assert metrics.std == pytest.approx(r.std(ddof=1))


def test_hill_tail_index_on_the_floor_sqrt_n_largest_losses() -> None:
    losses = np.array([16.0, 8.0, 4.0, 2.0, 1.0] + [0.5] * 11)  # n = 16, k = 4, X_(5) = 1
    alpha, k = hill_tail_index(losses)
    assert k == 4
    assert alpha == pytest.approx(1 / (math.log(2) * (4 + 3 + 2 + 1) / 4))
    alpha, k = hill_tail_index(np.array([3.0, 2.0, 1.0, 0.0] + [-1.0] * 12))  # X_(5) <= 0: undefined
    assert (alpha, k) == (None, 4)


def test_hill_recovers_a_pareto_tail() -> None:
    losses = np.random.default_rng(1).pareto(3.0, 100_000) + 1  # Pareto with alpha = 3
    alpha, k = hill_tail_index(losses)
    assert k == 316
    assert alpha == pytest.approx(3.0, rel=0.15)


def test_returns_and_drawdowns() -> None:
    curve = np.array([100.0, 110.0, 99.0, 105.0])
    assert simple_returns(curve) == pytest.approx([0.1, -0.1, 105 / 99 - 1])
    assert drawdowns(curve) == pytest.approx((0.1, 1 - 105 / 110))


def test_exposure_leverage_and_concentration() -> None:
    book = exposure(
        Decimal(1000),
        [
            Position("BTC", "LONG", Decimal(300), Decimal(100)),
            Position("BTC", "SHORT", Decimal(100), Decimal(50)),
            Position("ETH", "LONG", Decimal(200), Decimal(100)),
        ],
    )
    assert book.open_notional == Decimal(600) and book.used_margin == Decimal(250)
    assert book.gross_exposure == pytest.approx(0.6)
    assert book.net_exposure == pytest.approx(0.4)
    assert book.margin_usage == pytest.approx(0.25)
    assert book.position_leverage == pytest.approx(2.4)
    assert book.largest_symbol == "BTC"
    assert book.largest_symbol_share == pytest.approx(2 / 3)
    assert book.largest_symbol_equity_share == pytest.approx(0.4)
    assert book.hhi == pytest.approx(5 / 9)
    empty = exposure(Decimal(1000), [])
    assert empty.gross_exposure == 0 and empty.position_leverage is None and empty.hhi is None


@pytest.mark.parametrize(
    ("score", "level"),
    [(0, "LOW"), (24.999, "LOW"), (25, "MODERATE"), (49.999, "MODERATE"), (50, "HIGH"), (74.999, "HIGH"),
     (75, "CRITICAL"), (100, "CRITICAL")],
)  # fmt: skip
def test_levels_at_their_boundaries(score: float, level: str) -> None:
    assert level_of(score) == RiskLevel(level)


def _metrics(**values: float | None) -> ReturnMetrics:
    return ReturnMetrics(samples=100, **values)  # type: ignore[arg-type]


def _book(gross: float = 0.0, single: float = 0.0, positions: int = 1) -> Exposure:
    return Exposure(
        equity=Decimal(1000),
        open_positions=positions,
        open_notional=Decimal(0),
        used_margin=Decimal(0),
        gross_exposure=gross,
        net_exposure=gross,
        margin_usage=None,
        position_leverage=None,
        largest_symbol="BTC" if positions else None,
        largest_symbol_share=None,
        largest_symbol_equity_share=single,
        hhi=None,
    )


def test_score_is_the_sum_of_documented_components() -> None:
    from app.domains.riskbrain.metrics import MethodFigures

    metrics = ReturnMetrics(
        samples=100, hill_tail_index=3.0, current_drawdown=0.2, historical=MethodFigures(var_99=0.025)
    )
    components = score_components(metrics, _book(gross=1.0, single=0.5))
    assert components is not None
    points = {c.name: c.points for c in components}
    assert points == pytest.approx({"var_99": 17.5, "tail": 5.0, "drawdown": 10.0, "exposure": 15.0,
                                    "concentration": 15.0})  # fmt: skip
    assert sum(c.weight for c in components) == pytest.approx(1.0)
    assert score_components(ReturnMetrics(samples=3), _book()) is None


@pytest.mark.parametrize(("score", "reduce", "pause"), [(49.99, False, False), (50, True, False), (74.99, True, False),
                                                        (75, True, True)])  # fmt: skip
def test_actions_follow_the_level(score: float, reduce: bool, pause: bool) -> None:
    got = actions(score, _metrics(), _book(), 30)
    assert got["should_reduce_exposure"].active is reduce
    assert got["should_tighten_stops"].active is reduce  # HIGH or worse with an open position
    assert got["should_pause_trading"].active is pause
    assert all(a.reason for a in got.values())


def test_actions_on_exposure_concentration_and_tails_at_their_thresholds() -> None:
    assert not actions(10, _metrics(), _book(gross=1.5), 30)["should_reduce_exposure"].active
    got = actions(10, _metrics(), _book(gross=1.5001), 30)["should_reduce_exposure"]
    assert got.active and "1.50x equity > 1.5x" in got.reason
    assert not actions(10, _metrics(), _book(single=0.4), 30)["should_reduce_exposure"].active
    assert actions(10, _metrics(), _book(single=0.41), 30)["should_reduce_exposure"].active
    assert not actions(10, _metrics(hill_tail_index=3.0), _book(), 30)["should_tighten_stops"].active
    assert actions(10, _metrics(hill_tail_index=2.99), _book(), 30)["should_tighten_stops"].active
    assert actions(10, _metrics(excess_kurtosis=3.01), _book(), 30)["should_tighten_stops"].active
    no_positions = actions(10, _metrics(hill_tail_index=2.0), _book(positions=0), 30)["should_tighten_stops"]
    assert not no_positions.active and no_positions.reason == "no open positions"


def test_too_few_returns_give_no_numbers() -> None:
    curve = 10_000 * np.cumprod(np.concatenate(([1.0], 1 + np.full(29, 0.001))))  # 29 returns
    result = assess(curve, Decimal(10_000), [], CONFIG)
    assert result.status == "insufficient_data"
    assert (result.samples, result.samples_needed) == (29, 30)
    assert result.score is None and result.level is None and result.components is None
    m = result.metrics
    assert m.mean is None and m.std is None and m.skewness is None and m.hill_tail_index is None
    assert m.historical.var_99 is None and m.parametric.var_95 is None and m.monte_carlo.es_99 is None
    assert not any(a.active for a in result.actions.values())
    assert "29 returns, 30 needed" in result.actions["should_pause_trading"].reason


def test_full_assessment_agrees_with_its_parts() -> None:
    r = np.random.default_rng(5).standard_t(4, 500) / 100
    curve = 10_000 * np.cumprod(np.concatenate(([1.0], 1 + r)))
    config = RiskBrainConfig(window=400, mc_paths=50_000)
    result = assess(curve, Decimal(10_000), [Position("BTC", "LONG", Decimal(2000), Decimal(400))], config)
    used = simple_returns(curve[-401:])
    assert result.status == "ok" and result.samples == 400
    m = result.metrics
    assert m.historical.var_99 == historical_var_es(-used, 0.99)[0]
    assert m.parametric.es_95 == pytest.approx(parametric_var_es(used.mean(), used.std(ddof=1), 0.95)[1])
    assert result.score == pytest.approx(sum(c.points for c in result.components or []), abs=1e-4)
    assert result.level == level_of(result.score or 0)
    constant = assess(10_000 * np.ones(40), Decimal(10_000), [], CONFIG)  # zero variance: no skew, no NaN
    assert constant.status == "ok" and constant.metrics.skewness is None and constant.metrics.std == 0


def test_thirty_returns_are_enough() -> None:
    curve = 10_000 * np.cumprod(np.concatenate(([1.0], 1 + np.tile([0.001, -0.002, 0.003], 10))))
    result = assess(curve, Decimal(10_000), [], CONFIG)
    assert result.status == "ok" and result.samples == 30 and result.score is not None


def test_book_var_is_z_times_the_portfolio_sigma() -> None:
    from app.domains.riskbrain.metrics import book_market_risk

    rng = np.random.default_rng(2)
    ts = np.arange(0, 200) * 3_600_000
    a = 100 * np.cumprod(1 + rng.normal(0, 0.01, 200))
    b = 50 * np.cumprod(1 + rng.normal(0, 0.02, 200))
    # B misses one hour: both are aligned on the common timestamps
    series = {"A": (ts, a), "B": (np.delete(ts, 50), np.delete(b, 50))}
    risk = book_market_risk(series, {"A": 1000.0, "B": -400.0}, 10_000.0, 30)
    keep = np.delete(np.arange(200), 50)
    ra, rb = a[keep][1:] / a[keep][:-1] - 1, b[keep][1:] / b[keep][:-1] - 1
    var_a, var_b, cov = ra.var(ddof=1), rb.var(ddof=1), np.cov(ra, rb, ddof=1)[0, 1]
    sigma = math.sqrt(1000**2 * var_a + 400**2 * var_b - 2 * 1000 * 400 * cov)
    assert risk.status == "ok" and risk.samples == 198 and risk.as_of == int(ts[-1])
    assert risk.var_99_usdt == pytest.approx(stats.norm.ppf(0.99) * sigma)
    assert risk.var_95 == pytest.approx(stats.norm.ppf(0.95) * sigma / 10_000)
    assert risk.symbols[1].volatility == pytest.approx(math.sqrt(var_b))
    short = book_market_risk({"A": (ts[:10], a[:10])}, {"A": 1.0}, 10_000.0, 30)
    assert short.status == "insufficient_data" and short.var_99_usdt is None and short.samples == 9
    assert book_market_risk({}, {}, 1.0, 30).status == "no_positions"
