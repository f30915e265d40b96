"""Score what is served: the one evaluation of a signal's economic value.

Used by the out-of-sample report, `python -m app evaluate`, the promotion gate and the CLM (through
the training pipeline). The rule, per symbol, on the candles of a window:

- Decision at the close of candle t: the served call `decision.decide(probabilities[t], features, t)`
  (argmax, then the regime's behaviour), then the active risk profile's minimum confidence
  (`global_min_confidence`; a call below it is HOLD, as RiskGuard refuses it). Probabilities and
  features at t come from candles up to t only. A candle without a probability row (the last label
  horizon of a window, whose labels are unknown) makes no call.
- Entry at the open of candle t + 1, filled `slippage` worse for the trader, paying the taker fee.
  One position per symbol: no decision is taken while one is open.
- Exit at the first of: the stop (SL), the first take-profit (TP1), both at the exit plan's distances
  from the entry fill, or `max_hold_bars` candles (the entry candle counts as one) at that candle's
  close. The distances are the live plan's (`volatility_scaled`, the default, as the plan is whenever
  the feed gives an ATR): TP1 = 1.95 x ATR and SL = 2 x ATR over the entry, the ATR of the 14 candles
  closed at the decision, TP1 times the regime's scale at the decision (trending 1.25, ranging 0.8),
  each at least the plan's minimum distance (`served_barriers`, `barriers.barrier_distances`: the meta
  layer's labels use the same function). Without it: the default ladder, TP1 +1.95 %, SL -2 %. If the
  stop and TP1 both lie inside one candle's range the stop counts (the conservative reading). As the
  paper exchange fills them: a candle that opens beyond the stop exits at its open (a gap fills worse
  than the stop); TP1 fills at its trigger, also on a gap (a TAKE_PROFIT_MARKET order). An exit pays
  slippage and the taker fee. A position still open at the window's last candle closes at its close.
- Funding: every settlement the position is held over (after the entry, up to and including the
  open of the exit candle) costs rate x notional at that moment; longs pay positive rates, shorts
  receive them.

Each symbol trades its own equal share of the capital, compounding its own trades at 1x. Net return,
the maximum drawdown (marked at every candle's close) and the Sharpe ratio (daily returns, 365-day
annualization) are of the whole portfolio. Baselines go through the same simulation: the class prior
(always the training set's majority direction), the fallback momentum rule (its own confidence
against the same minimum, as served), always-HOLD, and buy-and-hold (long from the first possible
entry to the window's end, fees, slippage and funding, no TP/SL).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from app.core.clock import DAY_MS
from app.core.settings import Settings
from app.domains.exits.plan import ExitConfig
from app.domains.learning.dataset import SymbolRows
from app.domains.learning.evaluation import EPS, classification_metrics
from app.domains.markets.candles import Candles, FloatArray, Funding, IntArray
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from app.domains.signals.barriers import BarrierConfig, barrier_distances
from app.domains.signals.decision import decide
from app.domains.signals.fallback import NotEnoughHistory, momentum_signal
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.labels import HOLD, LONG, SHORT

DAYS_PER_YEAR = 365
_EXITS = ExitConfig()
TAKE_PROFIT = _EXITS.tp_distances[0]
"""TP1 of the exit plan's default ladder, a fraction of the entry price."""
STOP_LOSS = _EXITS.sl_distance
"""The exit plan's default stop distance, a fraction of the entry price."""
MAX_HOLD_BARS = 24
"""The served rule's maximum holding time in candles (the entry candle counts), also the meta layer's vertical
barrier: P(TP1 before the stop) is asked within this many candles."""
BASELINES = ("prior", "fallback_momentum", "always_hold", "buy_and_hold")
EXIT_REASONS = ("take_profit", "stop_loss", "max_hold", "window_end")
SIDES = {"LONG": 1, "SHORT": -1}
CLASSIFICATION_METRICS = ("accuracy", "log_loss", "brier")
SKILL_METRICS = ("moved_share", "up_share", "direction_accuracy", "direction_log_loss", "move_log_loss", "move_auc")
TRADING_METRICS = (
    "trades",
    "turnover",
    "win_rate",
    "net_return",
    "sharpe",
    "max_drawdown",
    "exposure",
    "avg_trade_return",
    "trade_t_stat",
    *(f"exits_{reason}" for reason in EXIT_REASONS),
)
MODEL_METRICS = (*CLASSIFICATION_METRICS, *SKILL_METRICS, *TRADING_METRICS)
Metrics = dict[str, float | None]
SideAt = Callable[[int], str]
"""The side to open at the close of candle index t: LONG, SHORT or HOLD."""


def _setting_default(name: str) -> float:
    return float(Settings.model_fields[name].default)


TAKER_FEE = _setting_default("taker_fee_rate")
"""The venue's taker fee (`TAKER_FEE_RATE`'s default), a fraction of the notional per fill."""
SLIPPAGE = _setting_default("paper_slippage_pct") / 100
"""The paper exchange's slippage against the taker (`PAPER_SLIPPAGE_PCT`'s default), a fraction of the price."""


def default_min_confidence(mode: str | None = None) -> float:
    """`global_min_confidence` of the risk profile `mode`; by default the profile the service starts in
    (`QUANTUM_RISK_MODE`'s default)."""
    name = mode if mode is not None else str(Settings.model_fields["quantum_risk_mode"].default)
    return float(DEFAULT_PROFILES[RiskMode(name)].global_min_confidence)


@dataclass(frozen=True)
class TradeRule:
    """The served rule's numbers. `None` for take_profit, stop_loss or max_hold_bars: no such exit.

    `volatility_scaled`: TP1 and SL are the live plan's ATR multiples (and regime scale) per decision; `take_profit`
    and `stop_loss` then only say whether there is such an exit (and are the ladder without an ATR)."""

    min_confidence: float = field(default_factory=default_min_confidence)
    take_profit: float | None = TAKE_PROFIT
    stop_loss: float | None = STOP_LOSS
    max_hold_bars: int | None = MAX_HOLD_BARS
    fee_rate: float = TAKER_FEE  # per fill
    slippage: float = SLIPPAGE  # per fill, against the trader
    volatility_scaled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        for name in ("take_profit", "stop_loss"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 < value < 1.0):
                raise ValueError(f"{name} must be in (0, 1) or None, got {value}")
        if self.max_hold_bars is not None and self.max_hold_bars < 1:
            raise ValueError(f"max_hold_bars must be >= 1 or None, got {self.max_hold_bars}")
        for name in ("fee_rate", "slippage"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 0.1):
                raise ValueError(f"{name} must be in [0, 0.1), got {value}")


@dataclass(frozen=True)
class SymbolMarket:
    """One symbol's candles (with the history before the window), funding and features; the window
    is candle indices [start, stop)."""

    candles: Candles
    funding: Funding | None
    features: FeatureMatrix
    start: int
    stop: int
    _distances: dict[BarrierConfig, tuple[FloatArray, FloatArray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def window(self) -> IntArray:
        return self.candles.timestamp[self.start : self.stop]

    def distances(self, barriers: BarrierConfig) -> tuple[FloatArray, FloatArray]:
        """(TP1, SL) distance per candle of the window's decisions (`barriers.barrier_distances`), computed once."""
        if barriers not in self._distances:
            rows = range(max(0, self.start), max(self.start, self.stop))
            self._distances[barriers] = barrier_distances(self.candles, barriers, self.features, rows)
        return self._distances[barriers]


def served_barriers(rule: TradeRule | None = None) -> BarrierConfig:
    """The barriers of the trade the served rule makes: TP1 and the stop as the exit plan sets them (ATR- and
    regime-scaled unless `volatility_scaled` is off, then the rule's distances) and its max hold
    (`MAX_HOLD_BARS` by default). The meta layer's P(TP1 before the stop) is the probability of that trade's
    outcome, and the simulation exits at the same levels."""
    r = rule if rule is not None else TradeRule()
    exits = ExitConfig()
    if r.take_profit is not None:
        exits = replace(exits, tp_distances=(r.take_profit, *exits.tp_distances[1:]))
    if r.stop_loss is not None:
        exits = replace(exits, sl_distance=r.stop_loss)
    hold = r.max_hold_bars if r.max_hold_bars is not None else MAX_HOLD_BARS
    return BarrierConfig(max_hold_bars=hold, volatility_scaled=r.volatility_scaled, exit=exits)


def symbol_market(candles: Candles, funding: Funding | None, start_ms: int, end_ms: int) -> SymbolMarket:
    """The window [start_ms, end_ms) of `candles`; features are computed on all of them (each from its
    own and earlier candles only)."""
    start = int(np.searchsorted(candles.timestamp, start_ms, side="left"))
    stop = int(np.searchsorted(candles.timestamp, end_ms, side="left"))
    return SymbolMarket(candles, funding, compute_features(candles, funding), start, stop)


@dataclass(frozen=True)
class Trade:
    side: str
    decided_ms: int  # open time of the candle at whose close the call was made
    entry_ms: int  # open time of the entry candle (the fill is at its open)
    entry_price: float  # the fill, slippage included
    exit_ms: int  # open time of the candle the exit happened in
    exit_price: float  # the fill, slippage included
    reason: str  # one of EXIT_REASONS
    bars: int  # candles held, the entry candle included
    fees: float  # fraction of the entry notional
    funding: float  # fraction of the entry notional paid (negative: received)
    net_return: float  # on the entry notional, after fees, slippage and funding
    notional: float  # entry notional, in units of this symbol's starting capital


@dataclass(frozen=True)
class SymbolRun:
    trades: list[Trade]
    equity: FloatArray  # per window candle, at its close; starting capital 1
    in_position: npt.NDArray[np.bool_]  # per window candle: a position was open during it


@dataclass
class _Open:
    sign: int
    decided: int
    entry: int
    fill: float
    capital: float
    take_profit: float | None  # distances from the fill, set at the decision (the plan's)
    stop_loss: float | None
    funding: float = 0.0


def simulate(market: SymbolMarket, side_at: SideAt, rule: TradeRule) -> SymbolRun:
    """Trade one symbol over its window with the served rule; `side_at(t)` is asked only when flat."""
    c = market.candles
    o, h, lo, cl, ts = c.open, c.high, c.low, c.close, c.timestamp
    start, stop = market.start, market.stop
    n = max(0, stop - start)
    equity = np.ones(n)
    in_position = np.zeros(n, dtype=bool)
    trades: list[Trade] = []
    funding_ts = market.funding.timestamp if market.funding is not None else np.empty(0, dtype=np.int64)
    funding_rate = market.funding.rate if market.funding is not None else np.empty(0)
    cash = 1.0
    pending: tuple[int, int] | None = None  # (sign, decision candle)
    pos: _Open | None = None
    slip, fee = rule.slippage, rule.fee_rate
    tp_at, sl_at = market.distances(served_barriers(rule))
    for t in range(start, stop):
        if pending is not None:
            sign, decided = pending
            pending = None
            pos = _Open(
                sign,
                decided,
                t,
                float(o[t]) * (1.0 + sign * slip),
                cash,
                take_profit=_distance(tp_at[decided], rule.take_profit),
                stop_loss=_distance(sl_at[decided], rule.stop_loss),
            )
        if pos is not None:
            in_position[t - start] = True
            if t > pos.entry:  # settlements since the previous open, while held
                lo_i = int(np.searchsorted(funding_ts, ts[t - 1], side="right"))
                hi_i = int(np.searchsorted(funding_ts, ts[t], side="right"))
                for k in range(lo_i, hi_i):
                    pos.funding += pos.sign * float(funding_rate[k]) * float(o[t]) / pos.fill
            exit_at = _exit(pos, t, o, h, lo, cl, rule, last=t == stop - 1)
            if exit_at is not None:
                price, reason = exit_at
                fill = price * (1.0 - pos.sign * slip)
                fees = fee + fee * fill / pos.fill
                net = pos.sign * (fill / pos.fill - 1.0) - fees - pos.funding
                trades.append(
                    Trade(
                        "LONG" if pos.sign > 0 else "SHORT",
                        int(ts[pos.decided]),
                        int(ts[pos.entry]),
                        pos.fill,
                        int(ts[t]),
                        fill,
                        reason,
                        t - pos.entry + 1,
                        fees,
                        pos.funding,
                        net,
                        pos.capital,
                    )
                )
                cash = pos.capital * (1.0 + net)
                pos = None
                equity[t - start] = cash
            else:
                marked = pos.sign * (float(cl[t]) / pos.fill - 1.0) - fee - pos.funding
                equity[t - start] = pos.capital * (1.0 + marked)
        else:
            equity[t - start] = cash
        if pos is None and t + 1 < stop:
            sign = SIDES.get(side_at(t), 0)
            if sign:
                pending = (sign, t)
    return SymbolRun(trades, equity, in_position)


def _distance(plan: float, ladder: float | None) -> float | None:
    """The plan's distance at the decision; the ladder's where the plan has none (no ATR yet, as live)."""
    if ladder is None:
        return None
    return float(plan) if math.isfinite(plan) else ladder


def _exit(
    pos: _Open,
    t: int,
    o: FloatArray,
    h: FloatArray,
    lo: FloatArray,
    cl: FloatArray,
    rule: TradeRule,
    last: bool,
) -> tuple[float, str] | None:
    """(price, reason) if the position exits during candle t, the stop first when both levels are in range."""
    sign = pos.sign
    stop = pos.fill * (1.0 - sign * pos.stop_loss) if pos.stop_loss is not None else None
    target = pos.fill * (1.0 + sign * pos.take_profit) if pos.take_profit is not None else None
    opened, high, low = float(o[t]), float(h[t]), float(lo[t])
    adverse, favourable = (low, high) if sign > 0 else (high, low)

    def beyond(price: float, level: float | None, worse: bool) -> bool:
        # worse: the price is at or beyond the level on the losing side of the position
        if level is None:
            return False
        return (price - level) * sign <= 0 if worse else (price - level) * sign >= 0

    if t > pos.entry and beyond(opened, stop, worse=True):
        return opened, "stop_loss"  # a gap through the stop fills at the open, worse than the stop
    if stop is not None and beyond(adverse, stop, worse=True):
        return stop, "stop_loss"
    if target is not None and beyond(favourable, target, worse=False):
        return target, "take_profit"
    if rule.max_hold_bars is not None and t - pos.entry + 1 >= rule.max_hold_bars:
        return float(cl[t]), "max_hold"
    if last:
        return float(cl[t]), "window_end"
    return None


# --- deciders --------------------------------------------------------------------------------------


def row_index(market: SymbolMarket, timestamp: IntArray) -> IntArray:
    """For every candle, the row of `timestamp` (one symbol's rows) with its open time, else -1."""
    out = np.full(len(market.candles), -1, dtype=np.int64)
    at = np.searchsorted(market.candles.timestamp, timestamp)
    inside = at < len(market.candles)
    match = np.zeros(len(timestamp), dtype=bool)
    match[inside] = market.candles.timestamp[at[inside]] == timestamp[inside]
    if not match.all():
        raise ValueError(f"{int((~match).sum())} row(s) have no candle of {market.candles.symbol}")
    out[at] = np.arange(len(timestamp))
    return out


def served_side(
    probabilities: FloatArray,
    rows_of_candle: IntArray,
    features: FeatureMatrix,
    min_confidence: float,
    confidence: FloatArray | None = None,
) -> SideAt:
    """The served call: `decide` (argmax, then the regime), then the profile's minimum confidence.

    `confidence`: per row, the number the minimum is compared with instead of the decision's (direction)
    probability, e.g. the meta layer's P(TP1 before the stop) for the row's side; NaN never passes."""

    def side_at(t: int) -> str:
        row = int(rows_of_candle[t])
        if row < 0:
            return "HOLD"
        decision = decide(probabilities[row], features, t)
        value = decision.confidence if confidence is None else float(confidence[row])
        return decision.side if value >= min_confidence else "HOLD"

    return side_at


def momentum_side(candles: Candles, min_confidence: float) -> SideAt:
    """The fallback momentum rule as served: its own confidence against the same minimum."""

    def side_at(t: int) -> str:
        try:
            signal = momentum_signal(candles.slice(0, t + 1))
        except NotEnoughHistory:
            return "HOLD"
        return signal.side if signal.confidence >= min_confidence else "HOLD"

    return side_at


def prior_side(prior: FloatArray, rows_of_candle: IntArray) -> SideAt:
    """The class prior's call: always its majority direction (LONG on a tie), wherever it has a row."""

    def side_at(t: int) -> str:
        row = int(rows_of_candle[t])
        if row < 0:
            return "HOLD"
        return "LONG" if prior[row, LONG] >= prior[row, SHORT] else "SHORT"

    return side_at


def constant_side(side: str) -> SideAt:
    return lambda _t: side


def first_only(side: str, first: int) -> SideAt:
    return lambda t: side if t == first else "HOLD"


# --- portfolio metrics ------------------------------------------------------------------------------


def portfolio_metrics(markets: Sequence[SymbolMarket], runs: Sequence[SymbolRun]) -> Metrics:
    """Trades, turnover, win rate, net return, Sharpe and max drawdown of equal sleeves, one per symbol."""
    windows = [m.window for m in markets]
    timeline = np.unique(np.concatenate(windows)) if windows else np.empty(0, dtype=np.int64)
    curve = np.zeros(len(timeline))
    exposure = []
    for window, run in zip(windows, runs, strict=True):
        at = np.searchsorted(window, timeline, side="right") - 1  # forward fill; 1.0 before the first candle
        curve += np.where(at >= 0, run.equity[np.maximum(at, 0)] if len(window) else 1.0, 1.0)
        if len(window):
            exposure.append(float(run.in_position.mean()))
    sleeves = max(1, len(runs))
    curve /= sleeves
    trades = [trade for run in runs for trade in run.trades]
    path = np.concatenate([[1.0], curve])
    drawdown = float(np.max(1.0 - path / np.maximum.accumulate(path)))
    day = timeline // DAY_MS
    last_of_day = np.flatnonzero(np.r_[day[1:] != day[:-1], True]) if len(day) else np.empty(0, dtype=np.int64)
    closes = np.concatenate([[1.0], curve[last_of_day]])  # the portfolio at each day's last close
    daily_returns = closes[1:] / closes[:-1] - 1.0
    std = float(daily_returns.std(ddof=1)) if len(daily_returns) > 1 else 0.0
    out: Metrics = {
        "trades": float(len(trades)),
        "turnover": sum(t.notional * (1.0 + t.exit_price / t.entry_price) for t in trades) / sleeves,
        "win_rate": float(np.mean([t.net_return > 0 for t in trades])) if trades else None,
        "net_return": float(path[-1] - 1.0),
        "sharpe": float(daily_returns.mean() / std * math.sqrt(DAYS_PER_YEAR)) if std > 0 else None,
        "max_drawdown": drawdown,
        "exposure": float(np.mean(exposure)) if exposure else 0.0,
        "avg_trade_return": float(np.mean([t.net_return for t in trades])) if trades else None,
        "trade_t_stat": _t_stat([t.net_return for t in trades]),
    }
    for reason in EXIT_REASONS:
        out[f"exits_{reason}"] = float(sum(t.reason == reason for t in trades))
    return out


def _t_stat(values: list[float]) -> float | None:
    """Mean / standard error of the trades' net returns: how far from zero the mean trade is, in noise units."""
    if len(values) < 2:
        return None
    std = float(np.std(values, ddof=1))
    return float(np.mean(values) / std * math.sqrt(len(values))) if std > 0 else None


def run_rule(
    markets: Sequence[SymbolMarket], sides: Sequence[SideAt], rule: TradeRule
) -> tuple[Metrics, list[SymbolRun]]:
    runs = [simulate(m, side, rule) for m, side in zip(markets, sides, strict=True)]
    return portfolio_metrics(markets, runs), runs


# --- skill metrics -----------------------------------------------------------------------------------


def _auc(score: FloatArray, positive: npt.NDArray[np.bool_]) -> float | None:
    """Probability that a positive row scores above a negative one (ties count half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = np.asarray(rankdata(score), dtype=np.float64)  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def skill_metrics(probabilities: FloatArray, y: npt.NDArray[np.int64]) -> Metrics:
    """Directional skill (on candles that moved, label != HOLD) apart from volatility skill (HOLD or not)."""
    p = np.clip(probabilities, EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    moved = y != HOLD
    out: Metrics = {"moved_share": float(moved.mean()) if len(y) else None}
    if moved.any():
        up = p[moved, LONG] / (p[moved, LONG] + p[moved, SHORT])
        is_up = y[moved] == LONG
        out["direction_accuracy"] = float(((up > 0.5) == is_up).mean())
        out["direction_log_loss"] = float(-np.mean(np.log(np.where(is_up, up, 1.0 - up))))
        out["up_share"] = float(is_up.mean())
    else:
        out.update(direction_accuracy=None, direction_log_loss=None, up_share=None)
    if len(y):
        p_move = np.clip(1.0 - p[:, HOLD], EPS, 1.0 - EPS)
        out["move_log_loss"] = float(-np.mean(np.log(np.where(moved, p_move, 1.0 - p_move))))
        out["move_auc"] = _auc(p_move, moved)
    else:
        out.update(move_log_loss=None, move_auc=None)
    return out


# --- the evaluation ---------------------------------------------------------------------------------


def _rows_of(markets: Sequence[SymbolMarket], rows: SymbolRows) -> list[tuple[npt.NDArray[np.intp], IntArray]]:
    """Per symbol: the indices of its rows in `rows`, and each candle's row among them."""
    group = rows.group
    out = []
    for g, market in enumerate(markets):
        mine = np.flatnonzero(group == g)
        out.append((mine, row_index(market, rows.timestamp[mine])))
    return out


def score_probabilities(
    probabilities: FloatArray,
    markets: Sequence[SymbolMarket],
    rows: SymbolRows,
    rule: TradeRule,
    confidence: FloatArray | None = None,
) -> Metrics:
    """A model's classification and skill metrics on `rows`, and its served rule on the markets' windows.

    `probabilities` are aligned with `rows` (labelled rows; `rows.group` indexes `markets`); so is
    `confidence`, if given: what the rule's minimum confidence applies to (`served_side`)."""
    sides = [
        served_side(
            probabilities[mine],
            rows_of_candle,
            market.features,
            rule.min_confidence,
            None if confidence is None else confidence[mine],
        )
        for market, (mine, rows_of_candle) in zip(markets, _rows_of(markets, rows), strict=True)
    ]
    trading, _ = run_rule(markets, sides, rule)
    return {**classification_metrics(probabilities, rows.y), **skill_metrics(probabilities, rows.y), **trading}


def score_baselines(
    markets: Sequence[SymbolMarket], rows: SymbolRows, prior: FloatArray, rule: TradeRule
) -> dict[str, Metrics]:
    """The baselines under the same rule; the prior also gets its classification and skill metrics.

    `prior`: the training class frequencies, (3,), or one row of them per row of `rows` (walk-forward
    folds each have their own). The prior's call at a candle is its majority direction there."""
    prior_p = np.tile(prior, (len(rows.y), 1)) if prior.ndim == 1 else prior
    majority = [prior_side(prior_p[mine], rows_of_candle) for mine, rows_of_candle in _rows_of(markets, rows)]
    prior_trading, _ = run_rule(markets, majority, rule)
    momentum, _ = run_rule(markets, [momentum_side(m.candles, rule.min_confidence) for m in markets], rule)
    hold, _ = run_rule(markets, [constant_side("HOLD") for _ in markets], rule)
    buy_rule = replace(rule, take_profit=None, stop_loss=None, max_hold_bars=None)
    buy, _ = run_rule(markets, [first_only("LONG", m.start) for m in markets], buy_rule)
    return {
        "prior": {
            **classification_metrics(prior_p, rows.y),
            **skill_metrics(prior_p, rows.y),
            **prior_trading,
        },
        "fallback_momentum": momentum,
        "always_hold": hold,
        "buy_and_hold": buy,
    }


def served_report(
    probabilities: Mapping[str, FloatArray | None],
    markets: Sequence[SymbolMarket],
    rows: SymbolRows,
    prior: FloatArray,
    rule: TradeRule,
) -> dict[str, Metrics]:
    """Every model (None: it has no probabilities, e.g. an ensemble without weights) and the baselines."""
    out: dict[str, Metrics] = {}
    for name, p in probabilities.items():
        out[name] = score_probabilities(p, markets, rows, rule) if p is not None else dict.fromkeys(MODEL_METRICS)
    out.update(score_baselines(markets, rows, prior, rule))
    return out


def describe_rule(rule: TradeRule) -> str:
    def pct(value: float | None) -> str:
        return "none" if value is None else f"{value * 100:.2f} %"

    hold = "none" if rule.max_hold_bars is None else f"{rule.max_hold_bars} candles"
    if rule.volatility_scaled and rule.take_profit is not None and rule.stop_loss is not None:
        b = served_barriers(rule)
        ex = b.exit
        levels = (
            f"TP1 {ex.atr_tp_multiples[0]} x ATR x the regime's scale (trending {ex.trending_tp_scale}, ranging "
            f"{ex.ranging_tp_scale}, volatile {ex.volatile_tp_scale}), SL {ex.atr_sl_multiple} x ATR (ATR of the "
            f"{b.atr_bars} candles closed at the decision; each at least {pct(ex.min_distance)}; the ladder "
            f"{pct(rule.take_profit)} / {pct(rule.stop_loss)} before an ATR exists), as the live exit plan"
        )
    else:
        levels = f"TP1 {pct(rule.take_profit)}, SL {pct(rule.stop_loss)}"
    return (
        f"served decision (regime filter) with min confidence {rule.min_confidence:.2f}; entry at the next "
        f"candle's open; {levels} (stop first when both are in one candle), max hold {hold}; taker fee "
        f"{pct(rule.fee_rate)} and slippage {pct(rule.slippage)} per fill; funding at every settlement held"
    )


def breakeven_probability(
    take_profit: float | None, stop_loss: float | None, fee_rate: float, slippage: float
) -> float | None:
    """The P(TP1 before the stop) at which a trade's expected net return is zero, with the served rule's costs
    (`backtest`: the entry and exit fills `slippage` worse, the taker fee on each fill's notional), counting
    every miss as a full stop (a timeout usually loses less: the true breakeven is somewhat lower); a long's
    returns (a short's differ by tp x slippage). None without both barriers."""
    if take_profit is None or stop_loss is None:
        return None

    def net(ratio: float) -> float:  # exit fill / entry fill for a long, after slippage on both fills
        return ratio - 1.0 - fee_rate - fee_rate * ratio

    win = net((1.0 + take_profit) * (1.0 - slippage))  # the levels are set from the entry fill
    loss = net((1.0 - stop_loss) * (1.0 - slippage))
    return -loss / (win - loss)


def rule_breakeven(rule: TradeRule, markets: Sequence[SymbolMarket]) -> tuple[float | None, float | None, float | None]:
    """(breakeven P(TP1 before the stop), TP1, SL) of the rule's typical trade on `markets`' windows: at the median
    of the plan's distances over the windows' decisions when volatility-scaled (the distances, so the breakeven,
    vary per trade: fees weigh more on narrow barriers), else at the ladder's."""
    tp, sl = rule.take_profit, rule.stop_loss
    if rule.volatility_scaled and tp is not None and sl is not None and markets:
        barriers = served_barriers(rule)
        both = [m.distances(barriers) for m in markets]
        tps = np.concatenate([d[0][m.start : m.stop] for d, m in zip(both, markets, strict=True)])
        sls = np.concatenate([d[1][m.start : m.stop] for d, m in zip(both, markets, strict=True)])
        if np.isfinite(tps).any() and np.isfinite(sls).any():
            tp, sl = float(np.nanmedian(tps)), float(np.nanmedian(sls))
    return breakeven_probability(tp, sl, rule.fee_rate, rule.slippage), tp, sl
