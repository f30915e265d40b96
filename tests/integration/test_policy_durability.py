"""Protective policy state on Postgres + Redis (Redis here keeps nothing on disk), and through kill -9."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.policy.profiles import ProfileOverrides, RiskMode
from app.domains.policy.state import PolicyState
from tests.conftest import TEST_REDIS_URL
from tests.support import API_KEY, ROOT, alembic_upgrade, free_port, running, trade_body

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def pg_redis_settings(
    make_settings: Callable[..., Settings], pg_url: str, redis_prefix: str
) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"database_url": pg_url, "redis_url": TEST_REDIS_URL, "redis_prefix": redis_prefix}
        values.update(overrides)
        return make_settings(**values)

    return make


async def _flush_redis(prefix: str) -> None:
    redis = Redis.from_url(TEST_REDIS_URL)
    try:
        await redis.delete(f"{prefix}:policy:state", f"{prefix}:policy:version")
    finally:
        await redis.aclose()


async def test_app_and_an_empty_redis_restarting_together_keep_every_limit(
    pg_redis_settings: Callable[..., Settings], redis_prefix: str
) -> None:
    async with running(bootstrap(pg_redis_settings())) as client:
        await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "cpi"})
        await client.patch("/api/v2/policy/risk-profile", json={"max_leverage": 2, "reason": "tighter"})
        await client.put("/api/v2/risk/blocklist/ETHUSDT", json={"reason": "halt"})
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
        version = (await client.get("/api/v2/policy/risk-profile")).json()["policy_version"]
    await _flush_redis(redis_prefix)  # Redis restarted: it kept nothing

    container = bootstrap(pg_redis_settings(quantum_risk_mode="AGGRESSIVE_SMALL_ACCOUNT"))
    async with running(container) as client:
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (profile["name"], profile["max_leverage"], profile["policy_version"]) == ("DEFENSIVE", 2, version)
        assert (profile["degraded"], profile["restore_error"]) == (False, None)
        blocklist = (await client.get("/api/v2/risk/blocklist")).json()
        assert blocklist == {"blocked": {"ETH/USDT:USDT": "halt"}, "kill_switch": "incident"}
        denied = await client.post("/trades", json=trade_body())
        assert denied.status_code == 403 and "KILL_SWITCH" in [r["code"] for r in denied.json()["reasons"]]
        # Redis serves the restored state again, to every other worker.
        live = await container.policy_store.backend.load()
        assert live is not None and (live.mode, live.kill_switch, live.version) == (
            RiskMode.DEFENSIVE,
            "incident",
            version,
        )


async def test_a_backend_state_the_database_never_committed_is_undone_on_start(
    pg_redis_settings: Callable[..., Settings], redis_prefix: str
) -> None:
    async with running(bootstrap(pg_redis_settings())) as client:
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
    # A newer state on Redis with no audit row (a commit that failed after the put).
    redis = Redis.from_url(TEST_REDIS_URL)
    await redis.mset(
        {
            f"{redis_prefix}:policy:state": PolicyState(mode=RiskMode.AGGRESSIVE_SMALL_ACCOUNT).to_json(),
            f"{redis_prefix}:policy:version": "99",
        }
    )
    await redis.aclose()

    container = bootstrap(pg_redis_settings())
    async with running(container):
        state = container.policy_store.snapshot.state
        assert (state.mode, state.kill_switch, state.version) == (RiskMode.NORMAL, "incident", 100)
        live = await container.policy_store.backend.load()
        assert live == state


async def test_a_change_the_database_refuses_is_neither_made_nor_audited(
    pg_redis_settings: Callable[..., Settings],
) -> None:
    """A NUL in the reason (Postgres text refuses it) fails the audit row: the mode never changes."""
    container = bootstrap(pg_redis_settings())
    async with running(container) as client:
        with pytest.raises(Exception, match="0x00"):
            await container.policy.switch_mode(RiskMode.AGGRESSIVE_SMALL_ACCOUNT, "bad\x00reason", "test", "t-1")
        assert container.policy_store.snapshot.mode is RiskMode.NORMAL
        live = await container.policy_store.backend.load()
        assert live is not None and live.mode is RiskMode.NORMAL
        assert (await client.get("/api/v2/policy/history")).json()["total"] == 0
        ok = await client.post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "fine"})
        assert ok.status_code == 200


async def test_writers_of_two_instances_take_turns_on_the_durable_row(
    pg_redis_settings: Callable[..., Settings],
) -> None:
    a, b = bootstrap(pg_redis_settings()), bootstrap(pg_redis_settings())
    async with running(a), running(b):
        start = a.policy_store.snapshot.state.version
        await asyncio.gather(
            *(
                (a if i % 2 else b).policy.override(
                    ProfileOverrides(**{("max_open_positions" if i % 2 else "position_size_cap_usd"): 100 + i}),
                    reason="race",
                    actor="test",
                    trace_id=f"t{i}",
                )
                for i in range(20)
            )
        )
        _, total = await a.policy.history(limit=100, offset=0, kind="PROFILE_OVERRIDE")
        assert total == 20
        stored = await a.policy_store.durable.load()
        live = await a.policy_store.backend.load()
        assert stored == live and stored is not None and stored.version == start + 20
        async with a.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM policy_state"))).scalar()
        assert rows == 1


def _uvicorn(env: dict[str, str], workdir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_healthy(client: httpx.AsyncClient, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, "uvicorn exited"
        try:
            if (await client.get(f"{url}/health", timeout=1)).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise AssertionError("uvicorn did not start within 30 s")


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_kill_9_with_the_kill_switch_engaged_keeps_it_engaged(
    backend: str, tmp_path: Path, pg_url: str, redis_prefix: str
) -> None:
    """The embedded default (SQLite file, in-process backend) and Postgres + an emptied Redis."""
    if backend == "embedded":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'quantum.db'}"
        await asyncio.to_thread(alembic_upgrade, database_url)
        env = {"DATABASE_URL": database_url, "REDIS_URL": "", "API_KEY": API_KEY}
    else:
        env = {"DATABASE_URL": pg_url, "REDIS_URL": TEST_REDIS_URL, "REDIS_PREFIX": redis_prefix, "API_KEY": API_KEY}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        proc = _uvicorn(env, tmp_path, port)
        try:
            await _wait_healthy(client, url, proc)
            engaged = await client.post(f"{url}/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
            assert engaged.status_code == 200
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        if backend == "redis":
            await _flush_redis(redis_prefix)

        proc = _uvicorn(env, tmp_path, port)
        try:
            await _wait_healthy(client, url, proc)
            trade = await client.post(f"{url}/trades", json=trade_body())
            assert trade.status_code == 403
            assert "KILL_SWITCH" in [r["code"] for r in trade.json()["reasons"]]
            assert (await client.get(f"{url}/api/v2/risk/blocklist")).json()["kill_switch"] == "incident"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_a_commit_that_fails_after_the_backend_took_the_change_is_undone(
    pg_redis_settings: Callable[..., Settings],
) -> None:
    """A deferred trigger fails the COMMIT itself, after Redis already holds the new state."""
    container = bootstrap(pg_redis_settings())
    async with running(container) as client:
        async with container.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$"
                    " LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON policy_changes"
                    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        with pytest.raises(Exception, match="commit refused"):
            await container.policy.set_kill_switch(False, "release", "test", "t-1")
        with pytest.raises(Exception, match="commit refused"):
            await container.policy.switch_mode(RiskMode.AGGRESSIVE_SMALL_ACCOUNT, "looser", "test", "t-2")
        live = await container.policy_store.backend.load()
        stored = await container.policy_store.durable.load()
        assert live is not None and stored is not None
        assert live.mode is stored.mode is container.policy_store.snapshot.mode is RiskMode.NORMAL
        assert (await client.get("/api/v2/policy/history")).json()["total"] == 0
