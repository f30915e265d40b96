"""Protective policy state survives a restart of the embedded default (SQLite + in-process backend)."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.policy.profiles import RiskMode
from app.domains.policy.state import PolicyState, replay
from tests.support import running, trade_body


async def _engage_everything(client: object) -> None:
    post = client.post  # type: ignore[attr-defined]
    assert (await post("/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": "cpi"})).status_code == 200
    patch = await client.patch(  # type: ignore[attr-defined]
        "/api/v2/policy/risk-profile", json={"max_open_positions": 2, "reason": "testing"}
    )
    assert patch.status_code == 200
    put = await client.put("/api/v2/risk/blocklist/ETHUSDT", json={"reason": "listing halt"})  # type: ignore[attr-defined]
    assert put.status_code == 200
    kill = await post("/api/v2/risk/kill-switch", json={"active": True, "reason": "exchange incident"})
    assert kill.status_code == 200


async def test_restart_keeps_kill_switch_blocklist_mode_and_overrides(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        await _engage_everything(client)
        before = (await client.get("/api/v2/policy/risk-profile")).json()

    container = bootstrap(make_settings())
    async with running(container) as client:
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (profile["name"], profile["max_open_positions"], profile["overridden_fields"]) == (
            "DEFENSIVE",
            2,
            ["max_open_positions"],
        )
        assert profile["policy_version"] == before["policy_version"]
        assert profile["restore_error"] is None and profile["allow_new_positions"] is True
        blocklist = (await client.get("/api/v2/risk/blocklist")).json()
        assert blocklist == {"blocked": {"ETH/USDT:USDT": "listing halt"}, "kill_switch": "exchange incident"}
        trade = await client.post("/trades", json=trade_body())
        assert trade.status_code == 403
        assert "KILL_SWITCH" in [r["code"] for r in trade.json()["reasons"]]
        # The history and the live state agree: the newest change of each kind is what is in force.
        history = (await client.get("/api/v2/policy/history")).json()["items"]
        assert [c["kind"] for c in history] == ["KILL_SWITCH", "SYMBOL_BLOCKED", "PROFILE_OVERRIDE", "RISK_MODE"]
        assert replay(
            ((c["kind"], c["to_value"], c["reason"]) for c in reversed(history)), RiskMode.NORMAL
        ) == container.policy_store.snapshot.state.with_version(0)


async def test_released_kill_switch_stays_released_after_restart(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
        await client.post("/api/v2/risk/kill-switch", json={"active": False, "reason": "resolved"})
    async with running(bootstrap(make_settings())) as client:
        assert (await client.post("/trades", json=trade_body())).status_code == 201


async def test_an_unreadable_stored_state_starts_with_new_positions_disabled(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with running(bootstrap(make_settings())) as client:
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "incident"})
    engine = create_async_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text('UPDATE policy_state SET state = \'{"mode": "NOT_A_MODE"\''))
    await engine.dispose()

    container = bootstrap(make_settings())
    async with running(container) as client:
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert profile["allow_new_positions"] is False
        assert "unreadable" in profile["restore_error"]
        ready = (await client.get("/ready")).json()
        assert ready["components"]["policy_store"]["status"] == "not_restored"
        assert "unreadable" in ready["components"]["policy_store"]["restore_error"]
        assert ready["status"] != "ready"
        trade = await client.post("/trades", json=trade_body())
        assert trade.status_code == 403
        assert [r["code"] for r in trade.json()["reasons"]] == ["NEW_POSITIONS_DISABLED"]

        # An operator's audited change replaces the unreadable copy and lifts the block.
        kill = await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": "re-engaged by hand"})
        assert kill.status_code == 200
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert (profile["allow_new_positions"], profile["restore_error"]) == (True, None)
        stored = await container.policy_store.durable.load()
        assert stored is not None and stored.kill_switch == "re-engaged by hand"


async def test_a_deployment_from_before_the_durable_copy_is_rebuilt_from_its_history(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with running(bootstrap(make_settings())) as client:
        await _engage_everything(client)
        await client.delete("/api/v2/risk/blocklist/ETHUSDT", params={"reason": "halt over"})
        expected = (await client.get("/api/v2/policy/risk-profile")).json()
    engine = create_async_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM policy_state"))  # as it was before migration 0003
    await engine.dispose()

    container = bootstrap(make_settings())
    async with running(container) as client:
        state = container.policy_store.snapshot.state
        assert (state.mode, state.kill_switch, state.blocked_symbols) == (RiskMode.DEFENSIVE, "exchange incident", {})
        assert state.overrides == {"DEFENSIVE": {"max_open_positions": 2}}
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert profile["max_open_positions"] == expected["max_open_positions"]
        assert await container.policy_store.durable.load() is not None


async def test_a_change_whose_audit_cannot_be_written_is_not_made(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    container = bootstrap(make_settings())
    async with running(container) as client:
        engine = create_async_engine(sqlite_url)
        async with engine.begin() as conn:  # the audit table refuses every insert from now on
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON policy_changes "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                )
            )
        await engine.dispose()
        with pytest.raises(IntegrityError, match="audit refused"):
            await container.policy.switch_mode(RiskMode.AGGRESSIVE_SMALL_ACCOUNT, "looser", "test", "trace-1")
        assert container.policy_store.snapshot.mode is RiskMode.NORMAL
        assert (await container.policy_store.backend.load()).mode is RiskMode.NORMAL  # type: ignore[union-attr]
        stored = await container.policy_store.durable.load()
        assert stored is not None and stored.mode is RiskMode.NORMAL
        assert (await client.get("/api/v2/policy/history")).json()["total"] == 0


def test_replay_follows_every_kind_of_change() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    changes = [
        ("RISK_MODE", "DEFENSIVE", "a"),
        ("PROFILE_OVERRIDE", {"profile": "DEFENSIVE", "overrides": {"max_leverage": "2"}}, "b"),
        ("PROFILE_OVERRIDE", {"profile": "NORMAL", "overrides": {"max_open_positions": 3}}, "c"),
        ("PROFILE_RESET", {"profile": "NORMAL", "overrides": {}}, "d"),
        ("SYMBOL_BLOCKED", {"symbol": "BTC/USDT:USDT", "blocked": True}, "halt"),
        ("SYMBOL_BLOCKED", {"symbol": "ETH/USDT:USDT", "blocked": True}, "halt2"),
        ("SYMBOL_UNBLOCKED", {"symbol": "BTC/USDT:USDT", "blocked": False}, "ok"),
        ("KILL_SWITCH", {"active": True}, "incident"),
        ("SAFETY_RESET", {"state": "NORMAL", "emergency": False, "reason": at}, "not policy"),
    ]
    assert replay(changes, RiskMode.NORMAL) == PolicyState(
        mode=RiskMode.DEFENSIVE,
        overrides={"DEFENSIVE": {"max_leverage": "2"}},
        blocked_symbols={"ETH/USDT:USDT": "halt2"},
        kill_switch="incident",
    )
    assert replay([("SAFETY_RESET", {}, "x")], RiskMode.NORMAL) is None


async def test_a_stored_override_outside_todays_bounds_is_not_restored(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """An older version accepted a cap of 1e400 (stored as Infinity): never served as a limit."""
    async with running(bootstrap(make_settings())):
        pass
    engine = create_async_engine(sqlite_url)
    bad = PolicyState(mode=RiskMode.NORMAL, overrides={"NORMAL": {"position_size_cap_usd": "Infinity"}})
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE policy_state SET state = :s"), {"s": bad.to_json()})
    await engine.dispose()
    async with running(bootstrap(make_settings())) as client:
        profile = (await client.get("/api/v2/policy/risk-profile")).json()
        assert profile["allow_new_positions"] is False and "unreadable" in profile["restore_error"]
        assert profile["position_size_cap_usd"] == 1000
