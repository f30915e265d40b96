"""/api/ai: signals from the champion ensemble (or the marked fallback) and the model registry."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.domains.signals.schemas import ModelPage, ModelVersionOut, SignalOut, SignalRequest
from app.routes.deps import ContainerDep

router = APIRouter(prefix="/api/ai", tags=["signals"])


@router.post("/signal", response_model=SignalOut, responses={404: {"description": "unknown symbol"}})
async def signal(body: SignalRequest, container: ContainerDep) -> SignalOut:
    """The ensemble's call for one symbol; `source` says whether a model or the fallback rule made it."""
    as_of = int(body.as_of.timestamp() * 1000) if body.as_of else None
    return SignalOut.model_validate(await container.signals.signal(body.symbol, as_of))


@router.get("/models", response_model=ModelPage)
async def models(
    container: ContainerDep,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelPage:
    items, total = await container.registry.list(kind=kind, status=status, limit=limit, offset=offset)
    return ModelPage(items=[ModelVersionOut.model_validate(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/models/{version_id}", response_model=ModelVersionOut)
async def model(version_id: uuid.UUID, container: ContainerDep) -> ModelVersionOut:
    return ModelVersionOut.model_validate(await container.registry.get(version_id))
