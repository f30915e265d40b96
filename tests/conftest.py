"""Shared fixtures.

Unit and API tests run on a fresh SQLite file per test (copied from one migrated template).
Integration tests use the real PostgreSQL and Redis of the machine (`TEST_DATABASE_URL`,
`TEST_REDIS_URL`); when one is unreachable they are skipped with a loud reason, unless
`REQUIRE_SERVICES=1` makes that a failure.
"""

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app import bootstrap as app_bootstrap
from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from tests.support import API_KEY, EventRecorder, FakeClock, QuoteFeed, alembic_upgrade, running

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_skipped_services: set[str] = set()


def service_unavailable(name: str, url: str, reason: str) -> None:
    message = f"{name} at {url} is unreachable ({reason}); these tests did not run"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1: {message}", pytrace=False)
    _skipped_services.add(message)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for message in sorted(_skipped_services):
        terminalreporter.write_line(f"!!! SKIPPED SERVICE TESTS: {message}", red=True, bold=True)


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return None
    except OSError as exc:
        return str(exc)


@pytest.fixture(autouse=True)
def quoted_prices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers built by tests price trades with a QuoteFeed (tests/support.py), unless the test is
    marked `replay_feed` (execution tests on the bundled candles)."""
    if request.node.get_closest_marker("replay_feed") is None:
        monkeypatch.setattr(app_bootstrap, "ReplayPriceFeed", lambda *args, **kwargs: QuoteFeed())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    alembic_upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "quantum.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": sqlite_url,
            "api_key": API_KEY,
            "redis_url": None,
            "log_level": "WARNING",
            "policy_poll_interval_seconds": 0.2,
            # Tests isolate one feature at a time; governance tests turn its limit layer on.
            "governance_limits_enabled": False,
            "modes_enabled": False,
            # Fills at the quoted price (QuoteFeed) without slippage, so API tests keep their numbers.
            "paper_slippage_pct": "0",
            # Exit plans on the static ladder (tests of the dynamic, ATR-based plan turn it on).
            "exit_atr_bars": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
async def api(
    make_settings: Callable[..., Settings], clock: FakeClock, recorder: EventRecorder
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    container = bootstrap(make_settings(), clock=clock, handlers=recorder.table())
    async with running(container) as client:
        yield client, container


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database with the migrations applied, dropped afterwards."""
    reason = _reachable(TEST_DATABASE_URL, 5432)
    if reason:
        service_unavailable("PostgreSQL", TEST_DATABASE_URL, reason)
    import asyncpg

    admin_dsn = TEST_DATABASE_URL.replace("+asyncpg", "")
    name = f"qt_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        service_unavailable("PostgreSQL", TEST_DATABASE_URL, str(exc))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(TEST_DATABASE_URL)
    url = parts._replace(path=f"/{name}").geturl()
    try:
        await asyncio.to_thread(alembic_upgrade, url)
        yield url
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test only; its keys are deleted afterwards."""
    reason = _reachable(TEST_REDIS_URL, 6379)
    if reason:
        service_unavailable("Redis", TEST_REDIS_URL, reason)
    from redis.asyncio import Redis

    prefix = f"qt-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
