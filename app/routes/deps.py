"""Annotated dependencies shared by the routes."""

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader

from app.bootstrap import Container
from app.core.context import current_trace_id
from app.core.errors import Unauthorized

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API_KEY from .env")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def require_api_key(container: ContainerDep, api_key: Annotated[str | None, Depends(_api_key_header)]) -> str:
    expected = container.settings.api_key
    if not api_key or not secrets.compare_digest(api_key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key")
    return api_key


def get_actor(
    _: Annotated[str, Depends(require_api_key)],
    x_actor: Annotated[str | None, Header(max_length=128, description="Who acts, for the audit trail")] = None,
) -> str:
    return x_actor or "api-key"


Actor = Annotated[str, Depends(get_actor)]
Authenticated = Depends(require_api_key)


def get_trace_id() -> str:
    return current_trace_id()


TraceId = Annotated[str, Depends(get_trace_id)]
