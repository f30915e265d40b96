"""/health and /ready tell the truth (within a bound, without leaking internals); every
unexpected error is a JSON 500 with its trace id; Swagger documents every body."""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import Receive, Scope, Send

from app.bootstrap import Container, bootstrap
from app.core.db import create_engine, database_failure
from app.core.settings import Settings
from app.domains.policy.backends import InProcessPolicyBackend
from app.main import create_app
from tests.support import API_KEY, free_port, running

Api = tuple[httpx.AsyncClient, Container]


async def test_health_and_ready(api: Api) -> None:
    client, _ = api
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    body = ready.json()
    # no model is trained: the signal source says so, but the service can do its job
    assert ready.status_code == 200 and body["status"] == "ready"
    assert body["components"]["signals"] == {
        "status": "fallback",
        "champion_ensemble": None,
        "serving": "fallback_momentum",
        "fallback_signals": 0,
        "last_fallback_at": None,
    }
    assert body["components"]["database"]["status"] == "up"
    assert body["components"]["redis"] == {"status": "not_configured"}
    assert body["components"]["policy_store"]["backend"]["name"] == "in_process"


async def test_ready_reports_a_down_policy_backend(make_settings: Callable[..., Settings]) -> None:
    backend = InProcessPolicyBackend()
    async with running(bootstrap(make_settings(), policy_backend=backend)) as client:
        backend.available = False
        body = (await client.get("/ready")).json()
        assert body["status"] == "degraded"
        assert body["components"]["policy_store"]["backend"]["status"] == "down"
        assert body["components"]["policy_store"]["backend"]["error"] == "unavailable"
        switch = await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "try"})
        assert switch.status_code == 503
        assert (await client.get("/api/v2/policy/risk-profile")).json()["name"] == "NORMAL"
        backend.available = True
        assert (
            await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "recovered"})
        ).status_code == 200


async def test_ready_is_503_when_the_database_is_down(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        working = container.engine
        port = free_port()
        container.engine = create_engine(f"postgresql+asyncpg://postgres:s3cret@127.0.0.1:{port}/none")
        try:
            response = await client.get("/ready")
        finally:
            await container.engine.dispose()
            container.engine = working
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["components"]["database"]["status"] == "down"
        assert body["components"]["database"]["error"] == "connection_refused"
        assert str(port) not in response.text and "127.0.0.1" not in response.text and "s3cret" not in response.text


async def test_ready_answers_within_its_bound_when_the_database_hangs(make_settings: Callable[..., Settings]) -> None:
    """A listener that accepts and never answers: /ready is `not_ready` after the connect timeout."""
    hung: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    container = bootstrap(make_settings(db_connect_timeout_seconds=0.5))
    try:
        async with running(container) as client:
            working = container.engine
            container.engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none", connect_timeout=5)
            try:
                started = time.perf_counter()
                response = await client.get("/ready")
                elapsed = time.perf_counter() - started
            finally:
                await container.engine.dispose()
                container.engine = working
    finally:
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()
    # the engine's own connect timeout (5 s) is longer: the readiness budget (0.5 + 0.5 s) cut it
    assert elapsed < 2.0, elapsed
    assert response.status_code == 503
    assert response.json()["components"]["database"] == {
        "status": "down",
        "error": "timeout",
        "latency_ms": pytest.approx(1000, abs=400),
    }


async def test_ready_is_not_ready_without_an_account(make_settings: Callable[..., Settings]) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        async with container.engine.begin() as conn:
            for table in ("safety_states", "equity_snapshots", "accounts"):
                await conn.execute(text(f"DELETE FROM {table}"))
        response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["components"]["database"]["status"] == "up"
    assert body["components"]["safety_governor"]["status"] == "not_initialised"


def _with_boom(container: Container) -> FastAPI:
    app = create_app(container.settings, container)

    async def boom() -> None:
        raise RuntimeError("secret internals: host db-7.internal")

    app.add_api_route("/boom", boom)
    return app


async def test_an_unexpected_error_is_a_json_500_with_its_trace_id(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    container = bootstrap(make_settings())
    app = _with_boom(container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom")
            given = await client.get("/boom", headers={"X-Trace-Id": "from-the-proxy-123"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error" and "internals" not in response.text
    assert response.headers["x-trace-id"] == body["trace_id"]
    assert response.headers.get_list("x-trace-id") == [body["trace_id"]]
    assert given.json()["trace_id"] == given.headers["x-trace-id"] == "from-the-proxy-123"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("event") == "internal_error"]
    assert [line["trace_id"] for line in logged] == [body["trace_id"], "from-the-proxy-123"]
    assert "RuntimeError: secret internals" in logged[0]["exc_info"]


async def test_an_error_raised_in_a_middleware_is_still_json_with_a_trace_id(
    make_settings: Callable[..., Settings],
) -> None:
    container = bootstrap(make_settings())
    app = _with_boom(container)

    class Broken:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                raise RuntimeError("a middleware bug")
            await self.inner(scope, receive, send)  # type: ignore[operator]

    app.add_middleware(Broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health", headers={"X-API-Key": API_KEY})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.headers["x-trace-id"] == response.json()["trace_id"]


async def test_a_database_error_escaping_the_handlers_is_503(make_settings: Callable[..., Settings]) -> None:
    """A connection failure raised as a raw OSError from the driver is still `database_unavailable`."""
    container = bootstrap(make_settings())
    app = create_app(container.settings, container)

    async def lost() -> None:
        async with container.engine.connect() as conn:
            await conn.run_sync(lambda _: (_ for _ in ()).throw(ConnectionResetError("peer reset")))

    async def integrity() -> None:
        raise IntegrityError("INSERT INTO accounts ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    app.add_api_route("/lost", lost)
    app.add_api_route("/integrity", integrity)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            lost_response = await client.get("/lost")
            integrity_response = await client.get("/integrity")
    assert lost_response.status_code == 503, lost_response.text
    assert lost_response.json()["error"] == "database_unavailable"
    assert lost_response.headers["x-trace-id"] == lost_response.json()["trace_id"]
    assert lost_response.headers["retry-after"] == "1"
    assert integrity_response.status_code == 500
    assert integrity_response.json()["error"] == "internal_error"
    assert "accounts" not in integrity_response.text


def test_database_failures_are_classified_and_bugs_are_not() -> None:
    refused = OperationalError("SELECT 1", None, ConnectionRefusedError(111, "refused"))
    assert database_failure(refused) == "connection_refused"
    assert database_failure(PoolTimeout("QueuePool limit reached")) == "pool_timeout"
    assert database_failure(OperationalError(None, None, sqlite3.OperationalError("database is locked"))) == "locked"
    assert database_failure(IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))) is None
    assert database_failure(ValueError("bad number")) is None
    assert database_failure(OSError("model file missing")) is None  # not raised by a database driver


async def test_openapi_has_examples_for_every_body(api: Api) -> None:
    client, _ = api
    schema = (await client.get("/openapi.json")).json()
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for path in schema["paths"].values()
        for op in path.values()
        if "requestBody" in op
    ]
    assert bodies
    for name in bodies:
        assert schema["components"]["schemas"][name].get("examples"), name
    assert (await client.get("/docs")).status_code == 200
