"""/health and /ready tell the truth; Swagger documents every body."""

from collections.abc import Callable

import httpx

from app.bootstrap import Container, bootstrap
from app.core.db import create_engine
from app.core.settings import Settings
from app.domains.policy.backends import InProcessPolicyBackend
from tests.support import free_port, running

Api = tuple[httpx.AsyncClient, Container]


async def test_health_and_ready(api: Api) -> None:
    client, _ = api
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    body = ready.json()
    # no model is trained: signals come from the fallback, so the service says it is degraded
    assert ready.status_code == 200 and body["status"] == "degraded"
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
        container.engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
        try:
            response = await client.get("/ready")
        finally:
            await container.engine.dispose()
            container.engine = working
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["components"]["database"]["status"] == "down"
        assert (
            "Connect" in body["components"]["database"]["error"] or "refused" in body["components"]["database"]["error"]
        )


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
