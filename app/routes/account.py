"""/api/v2/account: the paper account's live state."""

from fastapi import APIRouter

from app.domains.trading.schemas import AccountOut
from app.routes.deps import ContainerDep

router = APIRouter(prefix="/api/v2/account", tags=["account"])


@router.get("", response_model=AccountOut)
async def account(container: ContainerDep) -> AccountOut:
    """The account marked to market: cash balance, unrealized PnL at the feed's prices, equity."""
    account, unrealized = await container.trading.marked_account()
    return AccountOut(
        id=account.id,
        starting_balance=account.starting_balance,
        balance=account.equity,
        unrealized_pnl=unrealized,
        equity=account.equity + unrealized,
        open_positions=account.open_positions,
        open_notional=account.open_notional,
        used_margin=account.used_margin,
        updated_at=account.updated_at,
    )
