"""Response body of GET /api/strategy/recommendations. Money sums are exact decimal strings;
ratios are numbers; an undefined or infinite ratio is null and the strategy's `notes` say which."""

import math
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from app.core.money import DecimalStr
from app.domains.strategy.performance import (
    DEFINITIONS,
    DISABLE_RULE,
    PRIMARY_RULE,
    WEIGHT_RULE,
    Assessment,
    Recommendations,
)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class StrategyPerformanceOut(BaseModel):
    strategy: str = Field(description="The trades' signal source; trades opened without one are 'manual'")
    qualified: bool = Field(description="At least min_trades closed trades: used for recommendations")
    qualified_reason: str
    trades: int
    wins: int
    losses: int
    breakeven: int
    win_rate: float
    loss_rate: float
    gross_profit: DecimalStr
    gross_loss: DecimalStr
    net_pnl: DecimalStr
    profit_factor: float | None = Field(description="null when infinite (no loss) or 0/0; see notes")
    avg_win: DecimalStr | None
    avg_loss: DecimalStr | None
    expectancy: DecimalStr = Field(description="USDT per trade")
    mean_return: float = Field(description="Mean of realized_pnl / margin per trade")
    std_return: float | None
    downside_deviation: float
    trades_per_year: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: DecimalStr = Field(description="USDT")
    max_drawdown_pct: float
    first_closed_at: datetime
    last_closed_at: datetime
    notes: list[str] = Field(description="Why a number is null")

    @classmethod
    def of(cls, a: Assessment) -> "StrategyPerformanceOut":
        p = a.performance
        return cls(
            strategy=p.strategy,
            qualified=a.qualified,
            qualified_reason=a.reason,
            trades=p.trades,
            wins=p.wins,
            losses=p.losses,
            breakeven=p.breakeven,
            win_rate=p.win_rate,
            loss_rate=p.loss_rate,
            gross_profit=p.gross_profit,
            gross_loss=p.gross_loss,
            net_pnl=p.net_pnl,
            profit_factor=_finite(p.profit_factor),
            avg_win=p.avg_win,
            avg_loss=p.avg_loss,
            expectancy=p.expectancy,
            mean_return=p.mean_return,
            std_return=p.std_return,
            downside_deviation=p.downside_deviation,
            trades_per_year=p.trades_per_year,
            sharpe=_finite(p.sharpe),
            sortino=_finite(p.sortino),
            max_drawdown=p.max_drawdown,
            max_drawdown_pct=p.max_drawdown_pct,
            first_closed_at=p.first_closed_at,
            last_closed_at=p.last_closed_at,
            notes=list(p.notes),
        )


class DisableOut(BaseModel):
    strategy: str
    reason: str


class EnsembleOut(BaseModel):
    weights: dict[str, float] = Field(description="Sum to 1; empty when no strategy qualifies (see reason)")
    min_trades: int = Field(description="The minimum sample size a strategy needs to get a weight")
    rule: str
    reason: str


class StrategyRecommendationsOut(BaseModel):
    as_of: datetime
    min_trades: int = Field(description="STRATEGY_MIN_TRADES: closed trades a strategy needs to be recommended")
    starting_balance: DecimalStr = Field(description="The account's starting balance, the base of max_drawdown_pct")
    primary: str | None
    primary_reason: str
    fallbacks: list[str]
    disable: list[DisableOut]
    ensemble: EnsembleOut
    strategies: list[StrategyPerformanceOut] = Field(description="Every source with a closed trade, most trades first")
    rules: dict[str, str]
    definitions: dict[str, str]

    @classmethod
    def of(cls, r: Recommendations, starting_balance: Decimal, as_of: datetime) -> "StrategyRecommendationsOut":
        return cls(
            as_of=as_of,
            min_trades=r.min_trades,
            starting_balance=starting_balance,
            primary=r.primary,
            primary_reason=r.primary_reason,
            fallbacks=list(r.fallbacks),
            disable=[DisableOut(strategy=name, reason=reason) for name, reason in r.disable],
            ensemble=EnsembleOut(weights=r.weights, min_trades=r.min_trades, rule=WEIGHT_RULE, reason=r.weights_reason),
            strategies=[StrategyPerformanceOut.of(a) for a in r.strategies],
            rules={"primary": PRIMARY_RULE, "disable": DISABLE_RULE, "weights": WEIGHT_RULE},
            definitions=DEFINITIONS,
        )
