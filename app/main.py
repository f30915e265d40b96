"""The ASGI app: `app.main:app` (uvicorn), built by `create_app()`."""

import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from app.bootstrap import Container, bootstrap
from app.core.context import current_trace_id
from app.core.db import database_failure
from app.core.docs import install_docs
from app.core.errors import AppError
from app.core.logging import configure_logging
from app.core.middleware import TraceMiddleware
from app.core.openapi import install_openapi
from app.core.security import BodySizeLimitMiddleware
from app.core.settings import Settings, get_settings
from app.routes import (
    account,
    ceo,
    clm,
    governance,
    health,
    policy,
    positions,
    risk,
    riskbrain,
    safety,
    signals,
    strategy,
    trades,
)

logger = logging.getLogger(__name__)

DESCRIPTION = """
One process that trades crypto futures under risk governance.

**Authentication**: every mutating endpoint needs the header `X-API-Key` (the `API_KEY` in `.env`;
`make run` prints it once when it generates it). Click **Authorize** above and paste it.
Optional header `X-Actor` names who acts, for the audit trail.
"""


def error_response(exc: BaseException, *, trace_header: bool = False) -> JSONResponse:
    """503 `database_unavailable` if `exc` is a database failure, else 500 `internal_error`; the
    cause is logged with the trace id and never shown (it may hold hosts, SQL or driver text)."""
    trace_id = current_trace_id()
    headers = {"X-Trace-Id": trace_id} if trace_header else {}
    kind = database_failure(exc)
    if kind is not None:
        logger.error(
            "database_unavailable",
            extra={"error_class": kind, "error": f"{type(exc).__name__}: {exc}"[:500]},
        )
        return JSONResponse(
            {
                "error": "database_unavailable",
                "detail": f"the database is unavailable ({kind}); retry shortly. A trade retried with the "
                "same client_order_id is opened at most once",
                "trace_id": trace_id,
            },
            status_code=503,
            headers={**headers, "Retry-After": "1"},
        )
    logger.error("internal_error", exc_info=exc, extra={"error": type(exc).__name__})
    return JSONResponse(
        {"error": "internal_error", "detail": "an unexpected error, logged under this trace_id", "trace_id": trace_id},
        status_code=500,
        headers=headers,
    )


HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI wraps each included router
        if included is not None:
            methods |= allowed_methods(included.routes, scope)
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return methods


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    settings = settings or (container.settings if container else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if len(settings.api_key) < 16:
            raise RuntimeError("API_KEY is not set (or shorter than 16 characters); `make run` generates one")
        built = container or bootstrap(settings)
        await built.start()
        app.state.container = built
        # Long-lived startup objects leave the GC's generations; fewer, shorter pauses under load.
        gc.collect()
        gc.freeze()
        logger.info(
            "app_started",
            extra={
                "database": built.engine.dialect.name,
                "policy_backend": built.policy_store.backend.name,
                "risk_mode": built.policy_store.snapshot.mode.value,
            },
        )
        try:
            yield
        finally:
            await built.stop()

    configure_logging(settings.log_level)
    app = FastAPI(
        title="Quantum Trader",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # The last added is the outermost: every response, a 413 included, gets the headers and X-Trace-Id.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_request_body_bytes)
    app.add_middleware(TraceMiddleware, on_error=error_response)  # outermost: trace id, headers, 500s

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse({**exc.body(), "trace_id": current_trace_id()}, status_code=exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own refusals (unreadable body, no route, wrong method) in the app's error shape."""
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path; list every route's.
            allowed = sorted(allowed_methods(request.app.routes, request.scope))
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return JSONResponse(
            {
                "error": HTTP_ERROR_CODES.get(exc.status_code, "http_error"),
                "detail": exc.detail,
                "trace_id": current_trace_id(),
            },
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(SQLAlchemyError)
    async def database_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def last_resort(_: Request, exc: Exception) -> JSONResponse:
        """Raised outside TraceMiddleware (it answers everything inside it): set the header here."""
        return error_response(exc, trace_header=True)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse(
            {
                "error": "validation_error",
                "detail": summary,
                "errors": errors,
                "trace_id": current_trace_id(),
            },
            status_code=422,
        )

    for module in (
        policy,
        trades,
        positions,
        risk,
        safety,
        account,
        signals,
        clm,
        strategy,
        riskbrain,
        governance,
        ceo,
        health,
    ):
        app.include_router(module.router)
    install_openapi(app)  # the error bodies and statuses the app really returns
    install_docs(app)  # after the API routes: requests match those first
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` is built on first access, so importing this module reads no settings."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
