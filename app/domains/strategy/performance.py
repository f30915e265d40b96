"""Strategy Brain statistics: per signal source performance and recommendations, pure (no I/O).

Definitions (also returned by the API, so a reader of a number knows how it was made):

- A trade's return is r = realized_pnl / margin: what the trade earned (net of both fees) on the
  capital it tied up. Leverage is the strategy's choice, so it belongs to its performance.
- Crypto trades every day: a year is 365 days. Trades per year N = (n - 1) x 365 / span_days,
  span = the source's last close - its first close (n closes make n - 1 intervals).
- Sharpe = mean(r) / std(r, ddof=1) x sqrt(N). Sortino = mean(r) / DD x sqrt(N), with the downside
  deviation DD = sqrt(sum(min(r_i, 0)^2) / n) (target return 0, over all n trades).
- Max drawdown: on the equity a source alone would have made from the account's starting balance,
  E_0 = base, E_t = base + cumulative pnl after the t-th close (in order of close):
  absolute = max_t(peak_t - E_t), percent = max_t((peak_t - E_t) / peak_t) x 100.
- Expectancy = avg_win x win_rate - avg_loss x loss_rate (USDT per trade; avg_loss is positive).
  A trade with pnl exactly 0 counts in n but is neither a win nor a loss, so expectancy = mean pnl.
- Profit factor = gross profit / gross loss; infinite (no loss) is reported as null with a note.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np

MANUAL = "manual"  # trades opened without a `source` are grouped under this name
DAYS_PER_YEAR = 365
DEFAULT_MIN_TRADES = 30
Q = Decimal("0.00000001")  # averages of money are given to 8 decimals

DEFINITIONS: dict[str, str] = {
    "return": "r = realized_pnl / margin per trade (net of entry and exit fees; margin = notional / leverage)",
    "trades_per_year": "N = (n - 1) * 365 / span_days, span = last close - first close of the source "
    "(crypto trades 365 days a year)",
    "sharpe": "mean(r) / std(r, ddof=1) * sqrt(N)",
    "sortino": "mean(r) / DD * sqrt(N), DD = sqrt(sum(min(r_i, 0)^2) / n) (target 0)",
    "max_drawdown": "on E_t = starting_balance + cumulative pnl in order of close (E_0 = starting_balance): "
    "max(peak_t - E_t) in USDT and max((peak_t - E_t) / peak_t) * 100 in %",
    "expectancy": "avg_win * win_rate - avg_loss * loss_rate, USDT per trade (breakeven trades count in n only)",
    "profit_factor": "gross_profit / gross_loss; null when there is no losing trade (see notes)",
    "source": f"the trade's signal source; trades opened without one are grouped as '{MANUAL}'",
}


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    source: str
    realized_pnl: Decimal
    margin: Decimal
    closed_at: datetime


@dataclass(frozen=True, slots=True)
class Performance:
    """One source's statistics. `profit_factor` and `sortino` may be +inf (no loss, no downside);
    None means undefined, and `notes` say why."""

    strategy: str
    trades: int
    wins: int
    losses: int
    breakeven: int
    win_rate: float
    loss_rate: float
    gross_profit: Decimal
    gross_loss: Decimal
    net_pnl: Decimal
    profit_factor: float | None
    avg_win: Decimal | None
    avg_loss: Decimal | None
    expectancy: Decimal
    mean_return: float
    std_return: float | None
    downside_deviation: float
    trades_per_year: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: Decimal
    max_drawdown_pct: float
    first_closed_at: datetime
    last_closed_at: datetime
    notes: tuple[str, ...]


def group_by_source(trades: Iterable[ClosedTrade]) -> dict[str, list[ClosedTrade]]:
    """Trades per source, each list in the order given (the repository gives order of close)."""
    groups: dict[str, list[ClosedTrade]] = {}
    for trade in trades:
        groups.setdefault(trade.source or MANUAL, []).append(trade)
    return groups


def max_drawdown(pnls: Sequence[Decimal], base: Decimal) -> tuple[Decimal, float]:
    """Largest fall of base + cumulative pnl from its running peak: (USDT, % of that peak)."""
    equity = peak = base
    worst = Decimal(0)
    worst_pct = 0.0
    for pnl in pnls:
        equity += pnl
        peak = max(peak, equity)
        drop = peak - equity
        worst = max(worst, drop)
        if peak > 0:
            worst_pct = max(worst_pct, float(drop / peak) * 100.0)
    return worst, worst_pct


def trades_per_year(closes: Sequence[datetime]) -> float | None:
    """(n - 1) closes-intervals per 365 days of the observed span; None when there is no span."""
    if len(closes) < 2:
        return None
    span_days = (max(closes) - min(closes)).total_seconds() / 86400.0
    if span_days <= 0:
        return None
    return (len(closes) - 1) * DAYS_PER_YEAR / span_days


def performance(strategy: str, trades: Sequence[ClosedTrade], base: Decimal) -> Performance:
    """Every statistic of one source's closed trades (given in order of close; at least one)."""
    if not trades:
        raise ValueError("performance needs at least one closed trade")
    ordered = sorted(trades, key=lambda t: t.closed_at)  # stable: ties keep the given order
    pnls = [t.realized_pnl for t in ordered]
    n = len(pnls)
    notes: list[str] = []

    wins = [p for p in pnls if p > 0]
    losses = [-p for p in pnls if p < 0]
    gross_profit = sum(wins, Decimal(0))
    gross_loss = sum(losses, Decimal(0))
    avg_win = gross_profit / len(wins) if wins else None
    avg_loss = gross_loss / len(losses) if losses else None
    win_rate = len(wins) / n
    loss_rate = len(losses) / n
    expectancy = (avg_win or Decimal(0)) * len(wins) / n - (avg_loss or Decimal(0)) * len(losses) / n

    profit_factor: float | None
    if gross_loss > 0:
        profit_factor = float(gross_profit / gross_loss)
    elif gross_profit > 0:
        profit_factor = math.inf
        notes.append("profit_factor: no losing trade, gross loss 0: infinite, reported as null")
    else:
        profit_factor = None
        notes.append("profit_factor: no winning and no losing trade: 0 / 0 is undefined")

    returns = np.array([float(t.realized_pnl) / float(t.margin) for t in ordered], dtype=np.float64)
    mean = float(returns.mean())
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    per_year = trades_per_year([t.closed_at for t in ordered])
    if n < 2:
        notes.append("trades_per_year, sharpe, sortino: one trade has no frequency and no standard deviation")
    elif per_year is None:
        notes.append("trades_per_year, sharpe, sortino: every trade closed at the same instant, no frequency")

    std: float | None = None
    sharpe: float | None = None
    if n >= 2:
        # Identical returns have a standard deviation of exactly 0 (np.std may leave rounding dust).
        std = 0.0 if float(np.ptp(returns)) == 0.0 else float(returns.std(ddof=1))
        if std == 0.0:
            notes.append("sharpe: every return is the same, standard deviation 0: undefined")
        elif per_year is not None:
            sharpe = mean / std * math.sqrt(per_year)

    sortino: float | None = None
    if per_year is not None:
        if downside > 0:
            sortino = mean / downside * math.sqrt(per_year)
        elif mean > 0:
            sortino = math.inf
            notes.append("sortino: no losing trade, downside deviation 0: infinite, reported as null")
        else:
            notes.append("sortino: every return is 0: undefined")

    drawdown, drawdown_pct = max_drawdown(pnls, base)
    return Performance(
        strategy=strategy,
        trades=n,
        wins=len(wins),
        losses=len(losses),
        breakeven=n - len(wins) - len(losses),
        win_rate=win_rate,
        loss_rate=loss_rate,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        net_pnl=gross_profit - gross_loss,
        profit_factor=profit_factor,
        avg_win=avg_win.quantize(Q) if avg_win is not None else None,
        avg_loss=avg_loss.quantize(Q) if avg_loss is not None else None,
        expectancy=expectancy.quantize(Q),
        mean_return=mean,
        std_return=std,
        downside_deviation=downside,
        trades_per_year=per_year,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=drawdown,
        max_drawdown_pct=drawdown_pct,
        first_closed_at=ordered[0].closed_at,
        last_closed_at=ordered[-1].closed_at,
        notes=tuple(notes),
    )


# Recommendations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    performance: Performance
    qualified: bool
    reason: str  # why (not) qualified


@dataclass(frozen=True, slots=True)
class Recommendations:
    min_trades: int
    strategies: tuple[Assessment, ...]
    primary: str | None
    primary_reason: str
    fallbacks: tuple[str, ...]
    disable: tuple[tuple[str, str], ...]  # (strategy, reason)
    weights: dict[str, float]
    weights_reason: str


PRIMARY_RULE = (
    "primary = the highest annualized Sortino among qualified strategies (at least min_trades closed trades) "
    "that are not disabled; an unbounded Sortino (no losing trade) ranks first, one that cannot be annualized "
    "last; ties by expectancy, then name. fallbacks = the others in the same order"
)
DISABLE_RULE = "disable = qualified and (expectancy < 0 or profit factor < 1)"
WEIGHT_RULE = (
    "weights proportional to max(Sortino, 0) over qualified, not disabled strategies with positive expectancy, "
    "normalized to sum 1; if some have an unbounded Sortino (no losing trade), they share the weight equally"
)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _disable_reason(p: Performance) -> str | None:
    reasons: list[str] = []
    if p.expectancy < 0:
        reasons.append(f"expectancy {p.expectancy.normalize():f} USDT per trade < 0")
    if p.profit_factor is not None and p.profit_factor < 1:
        reasons.append(f"profit factor {_fmt(p.profit_factor)} < 1")
    return "; ".join(reasons) or None


def _rank_key(p: Performance) -> tuple[bool, float, Decimal, str]:
    """Highest Sortino first (inf before any number), undefined last; then expectancy, name."""
    return (p.sortino is None, -(p.sortino if p.sortino is not None else 0.0), -p.expectancy, p.strategy)


def _weights(candidates: Sequence[Performance], min_trades: int) -> tuple[dict[str, float], str]:
    if not candidates:
        return {}, (
            f"no strategy has at least {min_trades} closed trades, is not disabled and has a positive "
            "expectancy: no weights"
        )
    unbounded = [p for p in candidates if p.sortino == math.inf]
    if unbounded:
        share = 1.0 / len(unbounded)
        weights = {p.strategy: (share if p.sortino == math.inf else 0.0) for p in candidates}
        return weights, (
            f"{WEIGHT_RULE}; minimum sample {min_trades} trades. "
            f"{', '.join(p.strategy for p in unbounded)} had no losing trade (unbounded Sortino): equal shares"
        )
    scores = {p.strategy: max(p.sortino, 0.0) if p.sortino is not None else 0.0 for p in candidates}
    total = sum(scores.values())
    undefined = [p.strategy for p in candidates if p.sortino is None]
    if total <= 0:
        return {}, f"no candidate has a positive annualized Sortino (cannot annualize: {undefined}): no weights"
    note = f"; weight 0 for {', '.join(undefined)}: Sortino cannot be annualized" if undefined else ""
    return {k: v / total for k, v in scores.items()}, f"{WEIGHT_RULE}; minimum sample {min_trades} trades{note}"


def recommend(performances: Iterable[Performance], min_trades: int = DEFAULT_MIN_TRADES) -> Recommendations:
    """Primary, fallbacks, strategies to disable and ensemble weights, by the rules above."""
    assessed: list[Assessment] = []
    for p in sorted(performances, key=lambda p: (-p.trades, p.strategy)):
        if p.trades >= min_trades:
            assessed.append(Assessment(p, True, f"{p.trades} closed trades >= minimum {min_trades}"))
        else:
            reason = f"only {p.trades} closed trades, fewer than the minimum {min_trades}: not used for recommendations"
            assessed.append(Assessment(p, False, reason))
    qualified = [a.performance for a in assessed if a.qualified]
    disable = tuple((p.strategy, r) for p in qualified if (r := _disable_reason(p)) is not None)
    disabled = {name for name, _ in disable}
    ranked = sorted((p for p in qualified if p.strategy not in disabled), key=_rank_key)

    if ranked:
        best = ranked[0]
        sortino = (
            "unbounded (no losing trade)"
            if best.sortino == math.inf
            else (_fmt(best.sortino) if best.sortino is not None else "not annualizable")
        )
        primary_reason = f"{PRIMARY_RULE}. {best.strategy}: Sortino {sortino}, {best.trades} trades"
    elif qualified:
        primary_reason = f"every qualified strategy is disabled ({DISABLE_RULE}): no primary"
    else:
        primary_reason = f"no strategy has at least {min_trades} closed trades: no primary"

    weights, weights_reason = _weights([p for p in ranked if p.expectancy > 0], min_trades)
    return Recommendations(
        min_trades=min_trades,
        strategies=tuple(assessed),
        primary=ranked[0].strategy if ranked else None,
        primary_reason=primary_reason,
        fallbacks=tuple(p.strategy for p in ranked[1:]),
        disable=disable,
        weights=weights,
        weights_reason=weights_reason,
    )
