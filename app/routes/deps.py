"""Annotated dependencies shared by the routes. Kept flat: each dependency node costs time
on every request."""

import secrets
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader

from app.bootstrap import Container
from app.core.errors import Unauthorized
from app.core.validation import MAX_LIMIT, MAX_OFFSET, ActorName

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API_KEY from .env")


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def authorized_container(request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]) -> Container:
    """The container, for a caller holding the API key (compared in constant time)."""
    container: Container = request.app.state.container
    expected = container.settings.api_key
    if not api_key or not secrets.compare_digest(api_key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key")
    return container


async def get_actor(
    x_actor: Annotated[ActorName | None, Header(description="Who acts, for the audit trail")] = None,
) -> str:
    return x_actor or "api-key"


ContainerDep = Annotated[Container, Depends(get_container)]
AuthorizedContainer = Annotated[Container, Depends(authorized_container)]
Actor = Annotated[str, Depends(get_actor)]
# Pagination of every list endpoint: bounded, so no offset reaches the database as an overflow.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
