"""Pure risk math over a return series and an open book: no I/O, no clock of its own.

Conventions (the README repeats them):
- Returns are simple returns r_t = E_t / E_{t-1} - 1 of the equity curve; losses are L = -r.
  VaR and ES are losses as fractions of equity (positive = a loss; negative means even the tail is a gain).
- Historical VaR_a is the empirical loss quantile inf{l : F_n(l) >= a} = L_(ceil(n*a)) (the ceil(n*a)-th
  smallest loss), numpy's `method="inverted_cdf"`. Historical ES_a is the mean of the losses >= VaR_a.
- Parametric (normal): mu = mean(r), s = std(r, ddof=1); VaR_a = -mu + s * z_a with z_a = norm.ppf(a);
  ES_a = -mu + s * pdf(z_a) / (1 - a).
- Monte Carlo: `paths` one-period returns drawn from N(mu, s) by numpy's Generator (PCG64) with a fixed
  seed, then the historical estimators on the simulated losses. It checks the parametric figures by
  simulation; it adds nothing a normal cannot see (fat tails are in the historical and tail metrics).
- Skewness: scipy.stats.skew(bias=False), the adjusted Fisher-Pearson G1. Excess kurtosis:
  scipy.stats.kurtosis(fisher=True, bias=False), G2 (0 for a normal).
- Hill tail index of the losses: k = floor(sqrt(n)) upper order statistics, xi = mean(ln(X_(i) / X_(k+1)))
  for i = 1..k with X_(1) >= X_(2) >= ..., alpha = 1 / xi. Needs X_(k+1) > 0 (k+1 positive losses).
"""

import math
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import stats

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

LEVELS = (0.95, 0.99)


@dataclass(frozen=True)
class RiskBrainConfig:
    """Tunables; the defaults are what the README documents."""

    min_samples: int = 30  # fewer returns than this: no return-based figure at all
    window: int = 1000  # most recent returns used
    mc_paths: int = 100_000
    mc_seed: int = 7
    interval_seconds: float = 60.0  # timer between recomputations
    event_gap_seconds: float = 1.0  # TradeClosed recomputations at most this often (a burst of closes: one run)
    market_window_hours: int = 720  # hourly candles of the held symbols, ending now
    inline_max_returns: int = 0  # computations at most this size run on the loop; 0: always a thread


# --- one-number estimators --------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    """JSON has no NaN: a figure that is not a number is absent, never invented."""
    return value if math.isfinite(value) else None


def quantile_index(n: int, level: float) -> int:
    """0-based index of L_(ceil(n*level)) in the sorted losses (a tiny tolerance absorbs n*level round-off)."""
    return min(n - 1, max(0, math.ceil(n * level - 1e-9) - 1))


def historical_var_es(losses: FloatArray, level: float) -> tuple[float, float]:
    """(VaR, ES) at `level` by the empirical loss distribution (conventions in the module docstring)."""
    k = quantile_index(losses.size, level)
    part = np.partition(losses, k)
    var = float(part[k])
    es = float(part[k:].mean())  # every element from k on is >= VaR; ties below k are equal to it
    ties = part[:k][part[:k] == var]
    if ties.size:
        es = float((part[k:].sum() + ties.sum()) / (losses.size - k + ties.size))
    return var, es


def parametric_var_es(mu: float, sigma: float, level: float) -> tuple[float, float]:
    """Normal VaR and ES of the loss -r when r ~ N(mu, sigma)."""
    z = float(stats.norm.ppf(level))
    return -mu + sigma * z, -mu + sigma * float(stats.norm.pdf(z)) / (1.0 - level)


def monte_carlo_var_es(mu: float, sigma: float, paths: int, seed: int) -> dict[float, tuple[float, float]]:
    """VaR and ES at every level from `paths` simulated one-period returns, one draw for all levels."""
    rng = np.random.default_rng(seed)
    losses = -(mu + sigma * rng.standard_normal(paths))
    ks = [quantile_index(paths, level) for level in LEVELS]
    part = np.partition(losses, ks)
    out: dict[float, tuple[float, float]] = {}
    for level, k in zip(LEVELS, ks, strict=True):
        out[level] = (float(part[k]), float(part[k:].mean()))  # continuous draws: no ties
    return out


def hill_tail_index(losses: FloatArray) -> tuple[float | None, int]:
    """(alpha, k) of the Hill estimator on the k = floor(sqrt(n)) largest losses; alpha None if undefined."""
    n = losses.size
    k = math.isqrt(n)
    if k < 1 or k + 1 > n:
        return None, k
    top = -np.partition(-losses, k)[: k + 1]  # the k+1 largest, unordered except the (k+1)-th at the end
    threshold = float(top[k])
    if threshold <= 0.0:
        return None, k
    xi = float(np.log(top[:k] / threshold).mean())
    return (_finite(1.0 / xi) if xi > 0 else None), k


def drawdowns(equity: FloatArray) -> tuple[float, float]:
    """(max drawdown, current drawdown) of an equity curve, as fractions of the running peak."""
    if equity.size == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = 1.0 - equity / peak
    return float(dd.max()), float(dd[-1])


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodFigures:
    var_95: float | None = None
    var_99: float | None = None
    es_95: float | None = None
    es_99: float | None = None


@dataclass(frozen=True)
class ReturnMetrics:
    samples: int
    mean: float | None = None
    std: float | None = None
    skewness: float | None = None
    excess_kurtosis: float | None = None
    hill_tail_index: float | None = None
    hill_k: int | None = None
    max_drawdown: float | None = None
    current_drawdown: float | None = None
    historical: MethodFigures = field(default_factory=MethodFigures)
    parametric: MethodFigures = field(default_factory=MethodFigures)
    monte_carlo: MethodFigures = field(default_factory=MethodFigures)


def _figures(by_level: dict[float, tuple[float, float]]) -> MethodFigures:
    (v95, e95), (v99, e99) = by_level[0.95], by_level[0.99]
    return MethodFigures(_finite(v95), _finite(v99), _finite(e95), _finite(e99))


def return_metrics(returns: FloatArray, equity: FloatArray, config: RiskBrainConfig) -> ReturnMetrics:
    """Every return-based figure; with fewer than `min_samples` returns only the count (no invented numbers)."""
    n = int(returns.size)
    if n < config.min_samples or n < 2:
        return ReturnMetrics(samples=n)
    losses = -returns
    mu = float(returns.mean())
    sigma = float(returns.std(ddof=1))
    historical = {level: historical_var_es(losses, level) for level in LEVELS}
    parametric = {level: parametric_var_es(mu, sigma, level) for level in LEVELS}
    simulated = monte_carlo_var_es(mu, sigma, config.mc_paths, config.mc_seed)
    constant = sigma == 0.0
    skew = None if constant else _finite(float(stats.skew(returns, bias=False)))
    kurt = None if constant else _finite(float(stats.kurtosis(returns, fisher=True, bias=False)))
    alpha, k = hill_tail_index(losses)
    max_dd, current_dd = drawdowns(equity)
    return ReturnMetrics(
        samples=n,
        mean=_finite(mu),
        std=_finite(sigma),
        skewness=skew,
        excess_kurtosis=kurt,
        hill_tail_index=alpha,
        hill_k=k,
        max_drawdown=max_dd,
        current_drawdown=current_dd,
        historical=_figures(historical),
        parametric=_figures(parametric),
        monte_carlo=_figures(simulated),
    )


def simple_returns(equity: FloatArray) -> FloatArray:
    """r_t = E_t / E_{t-1} - 1; a non-positive previous equity has no defined return and is dropped."""
    if equity.size < 2:
        return np.empty(0)
    prev, cur = equity[:-1], equity[1:]
    ok = prev > 0
    return np.asarray(cur[ok] / prev[ok] - 1.0, dtype=np.float64)


# --- the open book ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    symbol: str
    side: str  # LONG or SHORT
    notional: Decimal
    margin: Decimal


@dataclass(frozen=True)
class Exposure:
    equity: Decimal
    open_positions: int
    open_notional: Decimal
    used_margin: Decimal
    gross_exposure: float | None  # open notional / equity (the book's effective leverage on equity)
    net_exposure: float | None  # (long - short notional) / equity
    margin_usage: float | None  # used margin / equity
    position_leverage: float | None  # open notional / used margin (notional-weighted leverage of the positions)
    largest_symbol: str | None
    largest_symbol_share: float | None  # of open notional
    largest_symbol_equity_share: float | None  # of equity
    hhi: float | None  # sum of squared symbol shares of open notional: 1/N equal, 1 one symbol
    by_symbol: dict[str, float] = field(default_factory=dict)  # symbol -> share of open notional


def _ratio(a: Decimal, b: Decimal) -> float | None:
    return float(a / b) if b > 0 else None


def exposure(equity: Decimal, positions: list[Position]) -> Exposure:
    """Exposure, leverage and concentration of the open book (exact sums, float ratios)."""
    notional = sum((p.notional for p in positions), Decimal(0))
    margin = sum((p.margin for p in positions), Decimal(0))
    net = sum((p.notional if p.side == "LONG" else -p.notional for p in positions), Decimal(0))
    per_symbol: dict[str, Decimal] = {}
    for p in positions:
        per_symbol[p.symbol] = per_symbol.get(p.symbol, Decimal(0)) + p.notional
    shares = {s: float(v / notional) for s, v in per_symbol.items()} if notional > 0 else {}
    largest = max(per_symbol, key=lambda s: (per_symbol[s], s)) if per_symbol and notional > 0 else None
    return Exposure(
        equity=equity,
        open_positions=len(positions),
        open_notional=notional,
        used_margin=margin,
        gross_exposure=_ratio(notional, equity),
        net_exposure=_ratio(net, equity),
        margin_usage=_ratio(margin, equity),
        position_leverage=_ratio(notional, margin),
        largest_symbol=largest,
        largest_symbol_share=shares[largest] if largest else None,
        largest_symbol_equity_share=_ratio(per_symbol[largest], equity) if largest else None,
        hhi=sum(v * v for v in shares.values()) if shares else None,
        by_symbol=dict(sorted(shares.items())),
    )


# --- score, level, actions --------------------------------------------------------------------------


class RiskLevel(StrEnum):
    LOW = "LOW"
    MODERATE = "MODERATE"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


def level_of(score: float) -> RiskLevel:
    """LOW [0, 25), MODERATE [25, 50), HIGH [50, 75), CRITICAL [75, 100]: a boundary belongs to the higher level."""
    if score >= 75:
        return RiskLevel.CRITICAL
    if score >= 50:
        return RiskLevel.HIGH
    if score >= 25:
        return RiskLevel.MODERATE
    return RiskLevel.LOW


@dataclass(frozen=True)
class Component:
    """One term of the score: `points` = weight x clip(value / full_at, 0, 1) x 100."""

    name: str
    value: float
    full_at: float  # the value at which this component is at its maximum
    weight: float
    points: float
    rule: str


# (name, weight, full_at, rule). Weights sum to 1, so the score is in [0, 100].
COMPONENTS: tuple[tuple[str, float, float, str], ...] = (
    ("var_99", 0.35, 0.05, "historical VaR 99% per period, full at 5% of equity"),
    ("tail", 0.10, 2.0, "4 - Hill tail index: 0 at alpha >= 4 or undefined, full at alpha <= 2 (infinite variance)"),
    ("drawdown", 0.10, 0.10, "current drawdown from the curve's peak, full at 10%"),
    ("exposure", 0.30, 2.0, "open notional / equity, full at the 200% hard limit"),
    ("concentration", 0.15, 0.5, "largest symbol's notional / equity, full at the 50% hard limit"),
)


def score_components(metrics: ReturnMetrics, book: Exposure) -> list[Component] | None:
    """The score's terms, or None when the returns are too few to score (no invented numbers)."""
    if metrics.historical.var_99 is None or metrics.current_drawdown is None:
        return None
    values = {
        "var_99": metrics.historical.var_99,
        "tail": 4.0 - metrics.hill_tail_index if metrics.hill_tail_index is not None else 0.0,
        "drawdown": metrics.current_drawdown,
        "exposure": book.gross_exposure or 0.0,
        "concentration": book.largest_symbol_equity_share or 0.0,
    }
    out = []
    for name, weight, full_at, rule in COMPONENTS:
        value = values[name]
        points = weight * min(max(value / full_at, 0.0), 1.0) * 100.0
        out.append(Component(name, value, full_at, weight, points, rule))
    return out


@dataclass(frozen=True)
class Action:
    active: bool
    reason: str


# Thresholds of the action rules (documented in the README).
REDUCE_EXPOSURE_AT = 1.5  # open notional / equity: 75% of the 200% hard limit
REDUCE_CONCENTRATION_AT = 0.4  # one symbol's notional / equity: 80% of the 50% hard limit
HEAVY_TAIL_ALPHA = 3.0  # Hill alpha below this: fourth moment infinite
HEAVY_TAIL_KURTOSIS = 3.0


def actions(score: float | None, metrics: ReturnMetrics, book: Exposure, needed: int) -> dict[str, Action]:
    """The three recommendations, each with the rule that fired or why none did."""
    level = level_of(score) if score is not None else None
    gross = book.gross_exposure or 0.0
    single = book.largest_symbol_equity_share or 0.0

    reduce = []
    if level in (RiskLevel.HIGH, RiskLevel.CRITICAL):
        reduce.append(f"risk level {level} (score {score:.1f} >= 50)")
    if gross > REDUCE_EXPOSURE_AT:
        reduce.append(f"open notional {gross:.2f}x equity > {REDUCE_EXPOSURE_AT}x")
    if single > REDUCE_CONCENTRATION_AT:
        reduce.append(f"{book.largest_symbol} is {single:.2f}x equity > {REDUCE_CONCENTRATION_AT}x")

    tighten = []
    heavy = []
    if metrics.hill_tail_index is not None and metrics.hill_tail_index < HEAVY_TAIL_ALPHA:
        heavy.append(f"Hill tail index {metrics.hill_tail_index:.2f} < {HEAVY_TAIL_ALPHA}")
    if metrics.excess_kurtosis is not None and metrics.excess_kurtosis > HEAVY_TAIL_KURTOSIS:
        heavy.append(f"excess kurtosis {metrics.excess_kurtosis:.2f} > {HEAVY_TAIL_KURTOSIS}")
    if book.open_positions:
        if level in (RiskLevel.HIGH, RiskLevel.CRITICAL):
            tighten.append(f"risk level {level} with {book.open_positions} open position(s)")
        tighten += [f"{h} with open positions" for h in heavy]

    pause = [f"risk level CRITICAL (score {score:.1f} >= 75)"] if level is RiskLevel.CRITICAL else []

    none = f"risk level {level}" if level is not None else f"no score: {metrics.samples} returns, {needed} needed"

    def act(reasons: list[str], otherwise: str) -> Action:
        return Action(True, "; ".join(reasons)) if reasons else Action(False, otherwise)

    return {
        "should_reduce_exposure": act(reduce, f"{none}, exposure {gross:.2f}x, largest symbol {single:.2f}x equity"),
        "should_tighten_stops": act(
            tighten,
            "no open positions" if not book.open_positions else f"{none}, no heavy tail",
        ),
        "should_pause_trading": act(pause, f"{none} below CRITICAL" if level is not None else none),
    }


# --- the assessment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    status: str  # "ok" or "insufficient_data"
    detail: str
    samples: int
    samples_needed: int
    metrics: ReturnMetrics
    exposure: Exposure
    score: float | None
    level: RiskLevel | None
    components: list[Component] | None
    actions: dict[str, Action]


def assess(equity_curve: FloatArray, equity: Decimal, positions: list[Position], config: RiskBrainConfig) -> Assessment:
    """The whole assessment from the equity curve (oldest first) and the open book; pure and deterministic."""
    curve = equity_curve[-(config.window + 1) :]
    returns = simple_returns(curve)
    metrics = return_metrics(returns, curve, config)
    book = exposure(equity, positions)
    components = score_components(metrics, book)
    score = round(sum(c.points for c in components), 4) if components is not None else None
    needed = max(config.min_samples, 2)
    recommended = actions(score, metrics, book, needed)
    if score is None:
        detail = f"insufficient data: {metrics.samples} returns of the equity curve, at least {needed} needed"
        status = "insufficient_data"
    else:
        detail = f"{metrics.samples} returns of the equity curve"
        status = "ok"
    return Assessment(
        status=status,
        detail=detail,
        samples=metrics.samples,
        samples_needed=needed,
        metrics=metrics,
        exposure=book,
        score=score,
        level=level_of(score) if score is not None else None,
        components=components,
        actions=recommended,
    )


# --- the open book against market data (informational: not part of the score) ----------------------


@dataclass(frozen=True)
class SymbolRisk:
    symbol: str
    net_notional: float  # long - short, USDT
    samples: int  # hourly returns after aligning every held symbol's timestamps
    volatility: float | None  # std (ddof=1) of hourly simple returns of the close


@dataclass(frozen=True)
class MarketRisk:
    """One-hour parametric VaR of the open book: sigma_p = sqrt(w' S w), w = net notional per symbol (USDT),
    S = sample covariance (ddof=1) of the held symbols' hourly close-to-close returns on common timestamps,
    VaR_a = z_a * sigma_p (zero mean: over one hour the mean is noise)."""

    status: str  # ok, no_positions, unavailable, insufficient_data
    detail: str
    samples: int = 0
    as_of: int | None = None  # open time (ms) of the last candle used
    symbols: list[SymbolRisk] = field(default_factory=list)
    var_95_usdt: float | None = None
    var_99_usdt: float | None = None
    var_95: float | None = None  # of equity
    var_99: float | None = None


def book_market_risk(
    series: dict[str, tuple[np.ndarray[Any, Any], FloatArray]],
    net_notional: dict[str, float],
    equity: float,
    min_samples: int,
) -> MarketRisk:
    """`series`: symbol -> (timestamps, closes), oldest first; every held symbol must be present."""
    if not net_notional:
        return MarketRisk("no_positions", "no open positions")
    symbols = sorted(net_notional)
    common = series[symbols[0]][0]
    for s in symbols[1:]:
        common = np.intersect1d(common, series[s][0], assume_unique=True)
    closes = np.vstack([series[s][1][np.isin(series[s][0], common, assume_unique=True)] for s in symbols])
    returns = closes[:, 1:] / closes[:, :-1] - 1.0 if closes.shape[1] > 1 else np.empty((len(symbols), 0))
    n = int(returns.shape[1])
    as_of = int(common[-1]) if common.size else None
    if n < min_samples:
        detail = f"insufficient data: {n} common hourly returns of the held symbols, at least {min_samples} needed"
        return MarketRisk("insufficient_data", detail, samples=n, as_of=as_of)
    cov = np.atleast_2d(np.cov(returns, ddof=1))
    w = np.array([net_notional[s] for s in symbols])
    sigma = math.sqrt(max(float(w @ cov @ w), 0.0))
    v95, v99 = (float(stats.norm.ppf(level)) * sigma for level in LEVELS)
    per_symbol = [
        SymbolRisk(s, net_notional[s], n, _finite(math.sqrt(float(cov[i, i])))) for i, s in enumerate(symbols)
    ]
    return MarketRisk(
        "ok",
        f"{n} hourly returns of {len(symbols)} held symbol(s)",
        samples=n,
        as_of=as_of,
        symbols=per_symbol,
        var_95_usdt=_finite(v95),
        var_99_usdt=_finite(v99),
        var_95=_finite(v95 / equity) if equity > 0 else None,
        var_99=_finite(v99 / equity) if equity > 0 else None,
    )
