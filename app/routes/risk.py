"""/api/v2/risk: symbol circuit breakers, kill switch, the stored decisions."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.context import current_trace_id
from app.core.validation import Reason, SymbolText
from app.domains.policy.schemas import BlocklistOut, KillSwitchBody, ReasonBody
from app.domains.trading.schemas import DecisionOut, DecisionPage
from app.routes.deps import Actor, AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(prefix="/api/v2/risk", tags=["risk"])


def _blocklist(container: ContainerDep) -> BlocklistOut:
    state = container.policy_store.snapshot.state
    return BlocklistOut(blocked=state.blocked_symbols, kill_switch=state.kill_switch)


@router.get("/blocklist", response_model=BlocklistOut)
async def blocklist(container: ContainerDep) -> BlocklistOut:
    return _blocklist(container)


@router.put("/blocklist/{symbol:path}", response_model=BlocklistOut)
async def block_symbol(
    symbol: Annotated[SymbolText, Path()],
    body: ReasonBody,
    container: AuthorizedContainer,
    actor: Actor,
) -> BlocklistOut:
    market = container.trading.market(symbol)
    await container.policy.block_symbol(market.symbol, body.reason, actor, current_trace_id())
    return _blocklist(container)


@router.delete("/blocklist/{symbol:path}", response_model=BlocklistOut)
async def unblock_symbol(
    symbol: Annotated[SymbolText, Path()],
    container: AuthorizedContainer,
    actor: Actor,
    reason: Annotated[Reason, Query()] = "unblocked by operator",
) -> BlocklistOut:
    market = container.trading.market(symbol)
    await container.policy.unblock_symbol(market.symbol, reason, actor, current_trace_id())
    return _blocklist(container)


@router.post("/kill-switch", response_model=BlocklistOut)
async def kill_switch(body: KillSwitchBody, container: AuthorizedContainer, actor: Actor) -> BlocklistOut:
    await container.policy.set_kill_switch(body.active, body.reason, actor, current_trace_id())
    return _blocklist(container)


@router.get("/decisions", response_model=DecisionPage)
async def decisions(
    container: ContainerDep,
    allowed: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DecisionPage:
    items, total = await container.trading.list_decisions(allowed, limit, offset)
    return DecisionPage(
        items=[DecisionOut.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )
