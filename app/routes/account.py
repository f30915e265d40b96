"""/api/v2/account: the paper account's live state."""

from fastapi import APIRouter

from app.domains.trading.schemas import AccountOut
from app.routes.deps import ContainerDep

router = APIRouter(prefix="/api/v2/account", tags=["account"])


@router.get("", response_model=AccountOut)
async def account(container: ContainerDep) -> AccountOut:
    return AccountOut.model_validate(await container.trading.account())
