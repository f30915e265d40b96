"""/api/ai: signals from the champion ensemble (or the marked fallback) and the model registry."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.core.validation import Label
from app.domains.signals.schemas import ModelPage, ModelVersionOut, SignalOut, SignalRequest, SizingOut, UniverseOut
from app.domains.signals.universe import build_ranking
from app.routes.deps import ContainerDep, Limit, Offset

router = APIRouter(prefix="/api/ai", tags=["signals"])


@router.post("/signal", response_model=SignalOut, responses={404: {"description": "unknown symbol"}})
async def signal(body: SignalRequest, container: ContainerDep) -> SignalOut:
    """The ensemble's call for one symbol; `source` says whether a model or the fallback rule made it.

    `sizing` proposes a notional for the live paper account (policy or half-Kelly multiplier,
    clipped by the active profile's limits); without `leverage` it says why it did not size.
    """
    as_of = int(body.as_of.timestamp() * 1000) if body.as_of else None
    made = await container.signals.signal(body.symbol, as_of)
    account = await container.trading.account()
    pnl = await container.trading.recent_pnl()
    sizing = container.signals.size(
        made,
        equity=account.equity,
        used_margin=account.used_margin,
        pnl_trend=float(pnl / account.equity) if account.equity > 0 else 0.0,
        profile=container.policy_store.snapshot.profile,
        leverage=body.leverage,
        stop_distance_pct=body.stop_loss_pct,
    )
    out = SignalOut.model_validate(made)
    out.sizing = SizingOut.model_validate(sizing)
    return out


@router.get("/universe", response_model=UniverseOut)
async def universe(
    container: ContainerDep,
    top_n: Annotated[int, Query(ge=1, le=100)] = 5,
    as_of: Annotated[datetime | None, Query(description="Replay time (default: the newest data)")] = None,
) -> UniverseOut:
    """Every symbol with data, scored (liquidity, trend, volatility) from candles up to `as_of`."""
    as_of_ms = int(as_of.timestamp() * 1000) if as_of else None
    return UniverseOut.model_validate(await build_ranking(container.market_data, as_of_ms, top_n))


@router.get("/models", response_model=ModelPage)
async def models(
    container: ContainerDep,
    kind: Annotated[Label | None, Query()] = None,
    status: Annotated[Label | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ModelPage:
    items, total = await container.registry.list(kind=kind, status=status, limit=limit, offset=offset)
    return ModelPage(items=[ModelVersionOut.model_validate(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/models/{version_id}", response_model=ModelVersionOut)
async def model(version_id: uuid.UUID, container: ContainerDep) -> ModelVersionOut:
    return ModelVersionOut.model_validate(await container.registry.get(version_id))
