"""Several workers starting at once on a fresh database: every one starts, and the paper account,
its governor state and its first equity snapshot exist exactly once."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.bootstrap import bootstrap
from app.core.db import create_engine
from app.core.settings import Settings
from tests.support import API_KEY, ROOT, free_port

WORKERS = 4


async def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                table: int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
                for table in ("accounts", "safety_states", "equity_snapshots")
            }
    finally:
        await engine.dispose()


async def concurrent_ensure_account(url: str, make_settings: Callable[..., Settings], n: int) -> None:
    """`n` containers, each with its own engine (as separate workers have), start at once."""
    containers = [bootstrap(make_settings(database_url=url)) for _ in range(n)]
    try:
        await asyncio.gather(*(c.trading.ensure_account() for c in containers))
        await asyncio.gather(*(c.trading.ensure_account() for c in containers))  # and again: still nothing new
        account = await containers[0].trading.account()
        assert account.equity == containers[0].settings.paper_starting_balance
    finally:
        await asyncio.gather(*(c.engine.dispose() for c in containers))


@pytest.mark.postgres
async def test_concurrent_ensure_account_on_postgres_creates_one_account(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    for _ in range(3):
        assert await counts(pg_url) == {"accounts": 0, "safety_states": 0, "equity_snapshots": 0}
        await concurrent_ensure_account(pg_url, make_settings, 8)
        assert await counts(pg_url) == {"accounts": 1, "safety_states": 1, "equity_snapshots": 1}
        engine = create_engine(pg_url)
        async with engine.begin() as conn:
            for table in ("safety_states", "equity_snapshots", "accounts"):
                await conn.execute(text(f"DELETE FROM {table}"))
        await engine.dispose()


async def test_concurrent_ensure_account_on_sqlite_creates_one_account(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    await concurrent_ensure_account(sqlite_url, make_settings, 4)
    assert await counts(sqlite_url) == {"accounts": 1, "safety_states": 1, "equity_snapshots": 1}


def _log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", range(3))
async def test_four_uvicorn_workers_start_together_on_a_fresh_database(
    pg_url: str, tmp_path: Path, attempt: int
) -> None:
    """`uvicorn --workers 4` on an empty database: all four start (a unique violation in one
    used to stop them all), /health answers, and there is one account."""
    assert await counts(pg_url) == {"accounts": 0, "safety_states": 0, "equity_snapshots": 0}
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "API_KEY": API_KEY,
        "REDIS_URL": "",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - our own interpreter, stopped below
            [*command, "--workers", str(WORKERS), "--no-access-log"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert time.monotonic() - started < 90, f"workers did not all start:\n{log.read_text()[-3000:]}"
                assert proc.poll() is None, f"uvicorn exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
                events = [e.get("event") for e in _log_events(log)]
                if events.count("app_started") == WORKERS:
                    break
                await asyncio.sleep(0.2)
            for _ in range(8):  # requests land on whichever worker accepts them
                assert (await client.get(f"http://127.0.0.1:{port}/health")).json() == {"status": "ok"}
            ready = await client.get(f"http://127.0.0.1:{port}/ready")
            assert ready.status_code == 200, ready.text
        text_ = log.read_text(errors="replace")
        assert "startup failed" not in text_ and "UniqueViolation" not in text_ and "Traceback" not in text_
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert await counts(pg_url) == {"accounts": 1, "safety_states": 1, "equity_snapshots": 1}
