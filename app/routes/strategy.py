"""/api/strategy: the Strategy Brain's per source performance and recommendations."""

from fastapi import APIRouter

from app.domains.strategy.schemas import StrategyRecommendationsOut
from app.domains.strategy.service import StrategyService
from app.routes.deps import ContainerDep

router = APIRouter(prefix="/api/strategy", tags=["strategy"])


@router.get("/recommendations", response_model=StrategyRecommendationsOut)
async def recommendations(container: ContainerDep) -> StrategyRecommendationsOut:
    """Per signal source: trades, win rate, profit factor, Sharpe, Sortino, drawdown, expectancy; then the
    primary strategy, fallbacks, strategies to disable and ensemble weights, each with its rule."""
    service = StrategyService(
        container.sessions,
        container.settings.account_id,
        container.settings.strategy_min_trades,
        container.trading.clock,
    )
    result, starting_balance, as_of = await service.recommendations()
    return StrategyRecommendationsOut.of(result, starting_balance, as_of)
