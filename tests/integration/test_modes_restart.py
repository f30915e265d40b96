"""An operator's EMERGENCY pin survives kill -9 of a real uvicorn process on Postgres + Redis."""

import signal
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_REDIS_URL
from tests.integration.test_policy_durability import _uvicorn, _wait_healthy
from tests.support import API_KEY, free_port, trade_body

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def _rows(database_url: str, account_id: str) -> list[tuple[str, str | None, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT kind, pinned, actor FROM mode_decisions WHERE account_id = :a ORDER BY id"),
                {"a": account_id},
            )
            return [(r[0], r[1], r[2]) for r in result]
    finally:
        await engine.dispose()


async def test_kill_9_with_emergency_pinned_keeps_emergency(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    account_id = f"modes-{uuid.uuid4().hex[:12]}"
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_PREFIX": redis_prefix,
        "API_KEY": API_KEY,
        "ACCOUNT_ID": account_id,
        "MODES_ENABLED": "true",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as client:
        proc = _uvicorn(env, tmp_path, port)
        try:
            await _wait_healthy(client, url, proc)
            before = (await client.get(f"{url}/api/ceo/status")).json()
            assert before["enabled"] is True and before["pinned"] is None
            # The trade the pin will deny is allowed first: the denial after the restart is the mode's.
            allowed = await client.post(
                f"{url}/trades", json=trade_body(price=None, stop_loss=None, client_order_id="before-pin")
            )
            assert allowed.status_code == 201, allowed.text
            pinned = await client.post(
                f"{url}/api/ceo/pin",
                json={"mode": "EMERGENCY", "reason": "exchange incident"},
                headers={"X-Actor": "oncall-alice"},
            )
            assert pinned.status_code == 200, pinned.text
            assert pinned.json()["mode"] == "EMERGENCY"
            pinned_at = pinned.json()["pinned"]["at"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert ("pin", "EMERGENCY", "oncall-alice") in await _rows(pg_url, account_id)

        proc = _uvicorn(env, tmp_path, port)
        try:
            await _wait_healthy(client, url, proc)
            status = (await client.get(f"{url}/api/ceo/status")).json()
            assert status["enabled"] is True and status["restored"] is True
            assert status["mode"] == "EMERGENCY"
            assert status["pinned"] == {
                "mode": "EMERGENCY",
                "reason": "exchange incident",
                "actor": "oncall-alice",
                "at": pinned_at,
            }
            assert status["layer"] == {"layer": "mode", "source": "EMERGENCY", "new_positions_allowed": False}
            denied = await client.post(
                f"{url}/trades", json=trade_body(price=None, stop_loss=None, client_order_id="after-restart")
            )
            assert denied.status_code == 403, denied.text
            details = [r["detail"] for r in denied.json()["reasons"]]
            assert "NEW_POSITIONS_DISABLED: mode=EMERGENCY" in details
            trail = (await client.get(f"{url}/api/ceo/decisions")).json()["items"]
            assert trail[0]["kind"] == "pin" and trail[0]["actor"] == "oncall-alice"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
