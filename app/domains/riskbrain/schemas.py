"""Response body of GET /api/risk/assessment. Ratios are floats (fractions: 0.012 = 1.2 %), money exact strings."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.money import DecimalStr


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class MethodFiguresOut(_Out):
    """VaR and ES as losses, fractions of equity per period (one step of the realized equity curve)."""

    var_95: float | None
    var_99: float | None
    es_95: float | None
    es_99: float | None


class ReturnMetricsOut(_Out):
    samples: int = Field(description="Returns used (the most recent `window`)")
    mean: float | None
    std: float | None = Field(description="Sample standard deviation (ddof=1)")
    skewness: float | None = Field(description="scipy.stats.skew(bias=False): adjusted Fisher-Pearson G1")
    excess_kurtosis: float | None = Field(description="scipy.stats.kurtosis(fisher=True, bias=False): G2")
    hill_tail_index: float | None = Field(description="Hill alpha of the losses on the k largest")
    hill_k: int | None = Field(description="k = floor(sqrt(samples))")
    max_drawdown: float | None
    current_drawdown: float | None
    historical: MethodFiguresOut = Field(description="Empirical loss quantile L_(ceil(n*a)); ES: mean of losses >= VaR")
    parametric: MethodFiguresOut = Field(description="Normal with the sample mean and std")
    monte_carlo: MethodFiguresOut = Field(description="`mc_paths` draws of the fitted normal, seeded")


class ExposureOut(_Out):
    equity: DecimalStr
    open_positions: int
    open_notional: DecimalStr
    used_margin: DecimalStr
    gross_exposure: float | None = Field(description="open notional / equity")
    net_exposure: float | None = Field(description="(long - short notional) / equity")
    margin_usage: float | None = Field(description="used margin / equity")
    position_leverage: float | None = Field(description="open notional / used margin")
    largest_symbol: str | None
    largest_symbol_share: float | None = Field(description="of open notional")
    largest_symbol_equity_share: float | None = Field(description="the largest symbol's notional / equity")
    hhi: float | None = Field(description="Herfindahl index of symbol shares of open notional (1 = one symbol)")
    by_symbol: dict[str, float]


class ComponentOut(_Out):
    name: str
    value: float
    full_at: float
    weight: float
    points: float = Field(description="weight x clip(value / full_at, 0, 1) x 100")
    rule: str


class ActionOut(_Out):
    active: bool
    reason: str


class SymbolRiskOut(_Out):
    symbol: str
    net_notional: float = Field(description="long - short notional, USDT")
    samples: int
    volatility: float | None = Field(description="std (ddof=1) of hourly close-to-close returns")


class MarketRiskOut(BaseModel):
    """The open book against the held symbols' hourly candles of the last `market_window_hours`: informational,
    not part of the score. VaR_a = z_a * sqrt(w' S w), w the net notional per symbol, S the returns' covariance."""

    status: Literal["ok", "no_positions", "unavailable", "insufficient_data"]
    detail: str
    samples: int
    as_of: datetime | None = Field(description="Open time of the last candle used")
    symbols: list[SymbolRiskOut]
    var_95_usdt: float | None
    var_99_usdt: float | None
    var_95: float | None = Field(description="of equity")
    var_99: float | None


class RiskAssessmentOut(BaseModel):
    status: Literal["ok", "insufficient_data"]
    detail: str
    samples: int
    samples_needed: int
    computed_at: datetime
    trigger: str = Field(description="What computed it: request, trade_closed or timer")
    score: float | None = Field(description="0-100, the sum of the components' points")
    level: Literal["LOW", "MODERATE", "HIGH", "CRITICAL"] | None
    components: list[ComponentOut] | None
    actions: dict[str, ActionOut]
    returns: ReturnMetricsOut
    exposure: ExposureOut
    market: MarketRiskOut
    method: dict[str, str | int | float]
