"""The OpenAPI document is the contract: schemathesis generates requests for every operation
and checks that the answers are never 5xx, use only documented status codes, and match the
documented body schema. Run on the embedded default (SQLite, in-process policy backend) and on
PostgreSQL + Redis, in-process over ASGI, with the API key, bounded and derandomized."""

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.bootstrap import Container, bootstrap
from app.core.openapi import ErrorOut, ValidationErrorOut
from app.core.settings import Settings
from app.domains.learning.clm import ClmConfig, ContinuousLearning
from app.domains.trading.schemas import RiskDeniedOut
from app.main import create_app
from tests.conftest import TEST_REDIS_URL
from tests.domains.learning.test_clm import FakeMarket, Pools, StubJob
from tests.support import API_KEY, TcpProxy

API = tuple[httpx.AsyncClient, Container]

# Per operation and generation mode; CONTRACT_MAX_EXAMPLES=200 makes a deeper (slower) search, and
# CONTRACT_SEED=<int> another one than the fixed default (derandomized: the same cases every run).
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "15"))
SEED = os.environ.get("CONTRACT_SEED")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Excluded operations, each with why. Empty: every operation in the OpenAPI document is exercised.
EXCLUDED: dict[str, str] = {}


@dataclass
class Report:
    """What one run did: requests per operation and every distinct failure (one example each)."""

    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    trade_ids: list[str] = field(default_factory=list)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def fail(self, label: str, kind: str, example: str) -> None:
        self.failures.setdefault((label, kind), example)

    def summary(self) -> str:
        lines = [f"{sum(self.requests.values())} requests over {len(self.requests)} operations"]
        lines += [f"  {label}: {dict(sorted(self.statuses[label].items()))}" for label in sorted(self.statuses)]
        lines += [f"- {label}: {kind}\n    {example}" for (label, kind), example in sorted(self.failures.items())]
        return "\n".join(lines)


def _describe(case: Any) -> str:
    sent = {
        key: value
        for key, value in (
            ("path", case.path_parameters),
            ("query", case.query),
            ("headers", {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}),
            ("body", case.body),
        )
        if value
    }
    return json.dumps(sent, default=repr)[:400]


def exercise(app: FastAPI, report: Report, max_examples: int = MAX_EXAMPLES, outage: bool = False) -> None:
    """Every operation of `app`'s schema, positive and negative examples, all checks; failures are collected."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema has no operations"
    for operation in operations:
        if operation.label not in EXCLUDED:
            exercise_operation(operation, report, max_examples, outage)


KNOWN_SYMBOLS = ("BTCUSDT", "ETH/USDT:USDT", "XRPUSDT")


def realistic(case: Any, pick: int, trade_ids: list[str]) -> None:
    """Name things that exist (a listed symbol, an opened trade), so the paths past the lookups are
    exercised too: fills and denials, closes and double closes, blocks and unblocks."""
    if isinstance(case.body, dict) and "symbol" in case.body:
        case.body["symbol"] = KNOWN_SYMBOLS[pick % len(KNOWN_SYMBOLS)]
    path = case.path_parameters or {}
    if "symbol" in path:
        path["symbol"] = KNOWN_SYMBOLS[pick % len(KNOWN_SYMBOLS)]
    if "trade_id" in path and trade_ids:
        path["trade_id"] = trade_ids[pick % len(trade_ids)]


def exercise_operation(operation: Any, report: Report, max_examples: int, outage: bool) -> None:
    """`outage`: a documented 503 is the right answer, any other 5xx is still a failure."""
    label = operation.label
    report.requests[label] = 0
    report.statuses[label] = Counter()
    cases = st.one_of(
        *operation.schema.get_strategies_from_examples(operation),
        *(operation.as_strategy(generation_mode=mode) for mode in MODES),
    )

    @given(case=cases, pick=st.integers(min_value=0, max_value=5))
    @settings(
        max_examples=max_examples * len(MODES),
        derandomize=SEED is None,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(int(SEED or 0))
    def one(case: Any, pick: int) -> None:
        if pick < 3:  # half the cases
            realistic(case, pick, report.trade_ids)
        report.requests[label] += 1
        headers = {"X-API-Key": API_KEY}
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # the app raised past its handlers: a 500 to a real client
            report.fail(label, f"500 (unhandled {type(exc).__name__}: {str(exc)[:120]})", _describe(case))
            return
        report.statuses[label][response.status_code] += 1
        if label == "POST /trades" and response.status_code == 201:
            report.trade_ids.append(response.json()["trade"]["id"])
        checks = CHECKS
        if outage:
            checks = [check for check in CHECKS if check is not not_a_server_error]
            if response.status_code >= 500 and response.status_code != 503:
                report.fail(
                    label, f"{response.status_code} Server error", f"{_describe(case)} -> {response.text[:300]}"
                )
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Failure, FailureGroup) as exc:
            failures = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
            for failure in failures:
                kind = f"{response.status_code} {failure.title}"
                report.fail(label, kind, f"{_describe(case)} -> {response.text[:300]}")

    one()


@contextmanager
def contract_app(settings: Settings) -> Iterator[FastAPI]:
    """The app as `make run` builds it, except that a CLM job is a stub: POST /api/clm/retrain
    answers as it would (202, or 409 while one runs) without training models for a minute."""
    container = bootstrap(settings)
    container.clm = ContinuousLearning(
        settings,
        ClmConfig(),
        FakeMarket(),
        Pools(),
        container.trading.clock,
        bus=container.bus,
        job=StubJob(released=True),
    )
    app = create_app(settings, container)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()


def run_contract(settings: Settings) -> Report:
    report = Report()
    with contract_app(settings) as app:
        exercise(app, report)
    print(report.summary())
    return report


def test_contract_on_the_embedded_default(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    report = run_contract(make_settings(model_dir=str(tmp_path / "models"), log_level="ERROR"))
    assert not report.failures, report.summary()


@pytest.mark.postgres
@pytest.mark.redis
def test_contract_on_postgres_and_redis(
    make_settings: Callable[..., Settings], pg_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=pg_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        model_dir=str(tmp_path / "models"),
        log_level="ERROR",
    )
    report = run_contract(settings)
    assert not report.failures, report.summary()


@pytest.mark.postgres
@pytest.mark.redis
async def test_contract_while_postgres_and_redis_are_down(
    make_settings: Callable[..., Settings], pg_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Started healthy, then both servers become unreachable: every answer is still one the
    document gives (503 where the operation needs the database or the policy backend)."""
    pg, redis = urlsplit(pg_url), urlsplit(TEST_REDIS_URL)
    pg_proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    redis_proxy = TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    await pg_proxy.start()
    await redis_proxy.start()
    settings = make_settings(
        database_url=pg._replace(netloc=f"{pg.username}@127.0.0.1:{pg_proxy.port}").geturl(),
        redis_url=redis._replace(netloc=f"127.0.0.1:{redis_proxy.port}").geturl(),
        redis_prefix=redis_prefix,
        model_dir=str(tmp_path / "models"),
        log_level="CRITICAL",
    )
    report = Report()
    try:
        with contract_app(settings) as app:
            await asyncio.to_thread(schemathesis.openapi.from_asgi, "/openapi.json", app)  # starts the app
            await pg_proxy.stop()
            await redis_proxy.stop()
            await asyncio.to_thread(exercise, app, report, 5, True)
    finally:
        await pg_proxy.stop()
        await redis_proxy.stop()
    print(report.summary())
    assert not report.failures, report.summary()
    assert report.statuses["GET /trades"][503] > 0 and set(report.statuses["GET /ready"]) == {503}


def test_contract_without_market_data(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A deployment whose market data is missing: signals may be refused (503), never a 500."""
    settings = make_settings(
        model_dir=str(tmp_path / "models"), market_data_dir=str(tmp_path / "no-market-data"), log_level="CRITICAL"
    )
    report = Report()
    with contract_app(settings) as app:
        exercise(app, report, 5, outage=True)
    print(report.summary())
    assert not report.failures, report.summary()


async def test_the_swagger_trade_example_opens_a_trade_whenever_it_is_sent(api: API) -> None:
    """Pasted as it is, at any time, under every default profile, twice in a row: 201 each time."""
    client, _ = api
    document = (await client.get("/openapi.json")).json()
    example = document["components"]["schemas"]["TradeCreate"]["examples"][0]
    assert "price_as_of" not in example and "client_order_id" not in example
    for mode in ("AGGRESSIVE_SMALL_ACCOUNT", "NORMAL", "DEFENSIVE"):
        switched = await client.post("/api/v2/policy/risk-mode", json={"mode": mode, "reason": "example check"})
        assert switched.status_code == 200, switched.text
        for _ in range(2):
            opened = await client.post("/trades", json=example)
            assert opened.status_code == 201, (mode, opened.text)
            assert "Idempotent-Replayed" not in opened.headers


async def test_documented_error_bodies_are_the_ones_sent(api: API) -> None:
    client, _ = api
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    trades = document["paths"]["/trades"]["post"]["responses"]
    assert set(trades) >= {"201", "400", "401", "403", "409", "413", "422", "503"}
    denial = trades["403"]["content"]["application/json"]["example"]
    assert RiskDeniedOut.model_validate(denial).decision.allowed is False
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "application/json" in response.get("content", {}), (method, path, status)
                example = response["content"]["application/json"].get("example")
                if status in ("401", "404", "409", "413") and example and "error" in example:
                    ErrorOut.model_validate(example)

    sent = await client.post("/trades", json={"symbol": "BTCUSDT"}, headers={"X-API-Key": "wrong-key-0123456789"})
    assert sent.status_code == 401
    ErrorOut.model_validate(sent.json())
    invalid = await client.post("/trades", json={"symbol": "BTCUSDT"})
    assert invalid.status_code == 422
    assert ValidationErrorOut.model_validate(invalid.json()).errors
    too_large = await client.post("/trades", json={"symbol": "BTCUSDT", "source": "x" * 70_000})
    assert too_large.status_code == 413
    assert ErrorOut.model_validate(too_large.json()).error == "payload_too_large"


async def test_patch_documents_its_required_reason(api: API) -> None:
    client, _ = api
    document = (await client.get("/openapi.json")).json()
    body = document["paths"]["/api/v2/policy/risk-profile"]["patch"]["requestBody"]
    assert body["required"] is True
    patch = document["components"]["schemas"][body["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
    assert "reason" in patch["required"]
    assert "audit" in patch["properties"]["reason"]["description"]
