"""/api/ai: signals from the champion ensemble (or the marked fallback) and the model registry."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.core.validation import Label, Timestamp
from app.domains.markets.universe import build_ranking
from app.domains.signals.schemas import ModelPage, ModelVersionOut, SignalOut, SignalRequest, SizingOut, UniverseOut
from app.routes.deps import AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(prefix="/api/ai", tags=["signals"])


@router.post(
    "/signal",
    response_model=SignalOut,
    responses={
        401: {"description": "missing or wrong X-API-Key (the route runs the models)"},
        404: {"description": "unknown symbol, or a tradable one without market data (no candle closed by `as_of`)"},
        422: {"description": "invalid body, or a symbol with market data but no exchange metadata: not tradable"},
        503: {"description": "no champion model and the fallback is disabled, or market data unavailable"},
    },
)
async def signal(body: SignalRequest, container: AuthorizedContainer) -> SignalOut:
    """The ensemble's call for one offered symbol; `source` says whether a model or the fallback rule made it.

    As of `as_of` (default: now on the price feed's clock, the one POST /trades fills on), from candles
    closed and funding settled by then; the response's `as_of` is the close of the newest candle used, and
    `stale` says whether that is more than SIGNAL_MAX_AGE_SECONDS before the requested time (`age_seconds`).
    Needs the API key: it runs the models (on the service's inference thread, not the event loop).

    Two layers: for a LONG/SHORT call of a champion with a meta layer, `confidence` is the calibrated
    P(TP1 before the stop within the max hold) for that side (`confidence_kind: p_tp_before_sl`, the barriers in
    `confidence_detail`); `direction_confidence` is the ensemble's probability of its call. A HOLD, or a champion
    without a meta layer, serves the direction probability as `confidence` and says so. RiskGuard's
    `global_min_confidence` compares with `confidence`.

    `sizing` proposes a notional for the live paper account (policy or half-Kelly multiplier, clipped by
    the active profile's limits, then rounded to the market's amount step as POST /trades fills it); below
    the market's minimums, without `leverage`, or on HOLD it says why it did not size.
    """
    as_of = int(body.as_of.timestamp() * 1000) if body.as_of else None
    made = await container.signals.signal(
        body.symbol,
        as_of,
        now=container.trading.execution.feed.now(),
        max_age_seconds=container.settings.signal_max_age_seconds,
    )
    safety, account = await container.trading.safety()
    pnl = await container.trading.recent_pnl()
    equity = account["equity"]
    sizing = container.sizing.size(
        made,
        equity=equity,
        used_margin=account["used_margin"],
        open_notional=account["open_notional"],
        pnl_trend=float(pnl / equity) if equity > 0 else 0.0,
        limits=container.guard.limits(
            container.policy_store.snapshot.profile, container.governor.view(safety, container.trading.clock())
        ),
        leverage=body.leverage,
        stop_distance_pct=body.stop_loss_pct,
        assumed_stop_pct=container.guard.config.assumed_stop_distance_pct,
    )
    out = SignalOut.model_validate(made)
    out.sizing = SizingOut.model_validate(sizing)
    return out


@router.get("/universe", response_model=UniverseOut)
async def universe(
    container: ContainerDep,
    top_n: Annotated[int, Query(ge=1, le=100)] = 5,
    as_of: Annotated[
        Timestamp | None, Query(description="Replay time, ISO 8601 with a timezone (default: the newest data)")
    ] = None,
) -> UniverseOut:
    """Every tradable symbol with data, scored (liquidity, trend, volatility) from candles up to `as_of`.

    `excluded` lists every symbol left out with why: data but no exchange metadata, tradable but no data,
    or not scorable (too little history, stale).
    """
    as_of_ms = int(as_of.timestamp() * 1000) if as_of else None
    ranking = await build_ranking(container.market_data, as_of_ms, top_n, catalog=container.signals.markets)
    return UniverseOut.model_validate(ranking)


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
