"""A connection the service gave up on (a black hole cut its statement mid-message) can leave its Postgres
backend holding locks in a state no server timeout ends: once the database answers again, the service ends
the backends it abandoned, and only those (a pid that started after it gave up is someone else's)."""

import time

import asyncpg
import pytest
from sqlalchemy import text

from app.core.db import _OutageGuard, create_engine

LOCK = 424242


async def _holder(url: str) -> asyncpg.Connection:
    """A session that holds an advisory transaction lock, as the cut batch held the account row."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    await conn.execute("BEGIN")
    await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK})")
    return conn


async def _alive(url: str, pid: int) -> bool:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await conn.close()


@pytest.mark.parametrize("started_before_it_was_abandoned", [True, False])
async def test_the_backends_of_abandoned_connections_are_ended(
    pg_url: str, started_before_it_was_abandoned: bool
) -> None:
    engine = create_engine(pg_url)
    holder = await _holder(pg_url)
    pid = holder.get_server_pid()
    guard = _OutageGuard()
    # abandoned now (after its backend started), or "before" it started: a reused pid must be left alone
    guard.abandoned[pid] = time.time() if started_before_it_was_abandoned else time.time() - 3600
    try:
        async with engine.connect() as conn:
            await conn.run_sync(lambda sync: guard._end_abandoned(sync.connection.dbapi_connection))
            assert await _alive(pg_url, pid) is not started_before_it_was_abandoned
            got = (await conn.execute(text(f"SELECT pg_try_advisory_xact_lock({LOCK})"))).scalar_one()
            assert got is started_before_it_was_abandoned  # the lock went with the backend, or is still held
        assert guard.abandoned == {}
    finally:
        if not holder.is_closed():
            holder.terminate()
        await engine.dispose()
