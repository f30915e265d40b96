"""OperatingModes against a real migrated database (SQLite, and PostgreSQL for the durable paths):
decisions stored once, restored with their dwell and pins on restart, pins stored before they apply,
failed decision writes kept pending and retried, and the trail paged."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker, database_failure
from app.core.errors import Conflict, ServiceUnavailable
from app.domains.modes.models import ModeDecisionRecord
from app.domains.modes.rules import Health, ModeInputs, OperatingMode, mode_layer
from app.domains.modes.service import (
    NOT_RESTORED,
    SYSTEM_ACTOR,
    UNDECIDED,
    ModesConfig,
    OperatingModes,
    Pin,
)
from app.domains.risk.stack import Layer
from tests.support import FakeClock, free_port

EXP, OPT, PRES, EMER = (
    OperatingMode.EXPANSION,
    OperatingMode.OPTIMIZATION,
    OperatingMode.PRESERVATION,
    OperatingMode.EMERGENCY,
)
ACCOUNT = "acct-modes"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
DWELL = ModesConfig().rules.min_dwell_seconds

EXPANDING = ModeInputs(
    risk_score=10.0, risk_status="ok", drawdown_pct=0.5, win_rate=0.7, trades=30, health=Health.HEALTHY
)
OPTIMIZING = replace(EXPANDING, risk_score=35.0)
PRESERVING = replace(EXPANDING, drawdown_pct=6.0)
EMERGENCY = replace(EXPANDING, risk_score=80.0)


class FakeInputs:
    """The inputs callable: returns `value`, counts calls, optionally waits for `gate`."""

    def __init__(self, value: ModeInputs) -> None:
        self.value = value
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> ModeInputs:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.value


class Switch:
    """A sessionmaker that can be pointed at an unreachable database and back."""

    def __init__(self, good: async_sessionmaker[AsyncSession], bad: async_sessionmaker[AsyncSession]) -> None:
        self.good, self.bad = good, bad
        self.broken = False

    def __call__(self) -> AsyncSession:
        return (self.bad if self.broken else self.good)()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return str(request.getfixturevalue("pg_url")) if request.param == "postgres" else sqlite_url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    built = create_engine(database_url)
    yield built
    await built.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def switch(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[Switch]:
    """`sessions`, switchable to a database that cannot be reached (SQLite: a file in a directory
    that does not exist; PostgreSQL: a port nobody listens on)."""
    if database_url.startswith("sqlite"):
        bad_url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}"
    else:
        parts = urlsplit(database_url)
        bad_url = parts._replace(netloc=f"{parts.username}@127.0.0.1:{free_port()}").geturl()
    bad_engine = create_engine(bad_url, connect_timeout=0.5)
    yield Switch(sessions, create_sessionmaker(bad_engine))
    await bad_engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def service(
    sessions: Callable[[], AsyncSession], inputs: FakeInputs, clock: FakeClock, account: str = ACCOUNT, **config: Any
) -> OperatingModes:
    return OperatingModes(sessions, account, ModesConfig(**config), clock, inputs)  # type: ignore[arg-type]


async def stored(sessions: Callable[[], AsyncSession], account: str = ACCOUNT) -> list[ModeDecisionRecord]:
    """Every row of `account`, oldest first."""
    async with sessions() as session:
        query = select(ModeDecisionRecord).where(ModeDecisionRecord.account_id == account)
        return list((await session.execute(query.order_by(ModeDecisionRecord.id))).scalars())


async def eventually(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling the service's state is the point
            await asyncio.sleep(0.01)


# --- decisions -------------------------------------------------------------------------------------


async def test_the_first_evaluation_decides_and_stores_one_row(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    modes = service(sessions, FakeInputs(EMERGENCY), clock)
    decision = await modes.evaluate()

    assert (decision.mode, decision.rule_mode) == (EMER, EMER)
    assert (modes.mode, modes.decided, modes.since, modes.pin) == (EMER, EMER, T0, None)
    assert (modes.last, modes.evaluated_at, modes.evaluations) == (decision, T0, 1)
    assert modes.restored and modes.persist_error is None
    assert modes.limit_layer() == mode_layer(EMER)
    rows = await stored(sessions)
    assert len(rows) == 1
    row = rows[0]
    assert (row.kind, row.previous, row.mode, row.decided, row.pinned) == (
        "decision",
        None,
        "EMERGENCY",
        "EMERGENCY",
        None,
    )
    assert (row.actor, row.decided_at, row.trace_id) == (SYSTEM_ACTOR, T0, None)
    assert row.inputs == EMERGENCY.as_dict()
    assert row.reason == f"{decision.reason} [request]"
    assert "risk score 80.0 >= 75" in row.reason
    trail = modes.trail()
    assert [(e.id, e.kind, e.mode) for e in trail] == [(row.id, "decision", "EMERGENCY")]


async def test_an_unchanged_decision_stores_nothing(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    inputs = FakeInputs(EMERGENCY)
    modes = service(sessions, inputs, clock)
    await modes.evaluate()
    clock.advance(seconds=30)
    again = await modes.evaluate("timer")
    assert again.mode is EMER and again.reason.startswith("stays EMERGENCY")
    # A loosening the dwell holds back is not a change either.
    inputs.value = EXPANDING
    clock.advance(seconds=30)
    held = await modes.evaluate()
    assert (held.mode, held.rule_mode) == (EMER, EXP)
    assert "min dwell" in held.reason

    assert len(await stored(sessions)) == 1
    assert (modes.since, modes.evaluated_at, modes.evaluations, inputs.calls) == (T0, T0 + timedelta(seconds=60), 3, 3)
    assert modes.last == held
    assert len(modes.trail()) == 1


async def test_each_change_is_stored_with_the_mode_before_it(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    inputs = FakeInputs(EMERGENCY)
    modes = service(sessions, inputs, clock)
    await modes.evaluate()
    inputs.value = EXPANDING
    clock.advance(seconds=DWELL)
    assert (await modes.evaluate("trade")).mode is PRES  # one step, though the rules choose EXPANSION
    assert modes.since == T0 + timedelta(seconds=DWELL)

    rows = await stored(sessions)
    assert [(r.previous, r.decided) for r in rows] == [(None, "EMERGENCY"), ("EMERGENCY", "PRESERVATION")]
    assert rows[1].reason.startswith("loosens one step to PRESERVATION") and rows[1].reason.endswith("[trade]")
    assert [e.id for e in modes.trail()] == [rows[1].id, rows[0].id]


async def test_concurrent_evaluations_store_one_change(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    modes = service(sessions, FakeInputs(PRESERVING), clock)
    decisions = await asyncio.gather(*(modes.evaluate() for _ in range(5)))
    assert {d.mode for d in decisions} == {PRES}
    assert len(await stored(sessions)) == 1


# --- restore ---------------------------------------------------------------------------------------


async def test_a_restart_restores_the_mode_and_its_dwell(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    first = service(sessions, FakeInputs(EMERGENCY), clock)
    await first.evaluate()

    clock.advance(seconds=60)
    inputs = FakeInputs(EXPANDING)
    second = service(sessions, inputs, clock)
    assert not second.restored
    assert second.limit_layer() is NOT_RESTORED
    assert second.limit_layer().new_positions_allowed is False
    assert second.mode is None

    held = await second.evaluate()
    assert second.restored and second.restore_error is None
    assert (second.decided, second.since) == (EMER, T0)
    assert (held.mode, held.rule_mode) == (EMER, EXP)  # 60 s in EMERGENCY, not a fresh start
    assert "60s in EMERGENCY < min dwell" in held.reason
    assert second.limit_layer() == mode_layer(EMER)
    assert [e.decided for e in second.trail()] == ["EMERGENCY"]
    assert len(await stored(sessions)) == 1

    # The dwell counts from the stored decision, not from the restart.
    clock.advance(seconds=DWELL - 60)
    assert (await second.evaluate()).mode is PRES
    assert [r.decided for r in await stored(sessions)] == ["EMERGENCY", "PRESERVATION"]


async def test_a_restart_restores_the_pin(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    inputs = FakeInputs(OPTIMIZING)
    first = service(sessions, inputs, clock)
    await first.evaluate()
    clock.advance(seconds=10)
    pin = await first.pin_mode(PRES, "exchange maintenance", "alice", "trace-1")
    pinned_at = clock.now
    clock.advance(seconds=DWELL)
    inputs.value = EXPANDING
    assert (await first.evaluate()).mode is EXP  # decided moves on under the pin
    decided_at = clock.now

    clock.advance(seconds=5)
    second = service(sessions, FakeInputs(EXPANDING), clock)
    await second.evaluate()
    assert second.pin == pin == Pin(PRES, "exchange maintenance", "alice", pinned_at)
    assert (second.mode, second.decided, second.since) == (PRES, EXP, decided_at)
    assert second.limit_layer() == mode_layer(PRES)
    assert [e.kind for e in second.trail()] == ["decision", "pin", "decision"]

    await second.unpin("maintenance over", "bob", None)
    assert (second.mode, second.pin) == (EXP, None)
    third = service(sessions, FakeInputs(EXPANDING), clock)
    await third.evaluate()
    assert (third.mode, third.pin) == (EXP, None)


async def test_restoring_reads_only_its_own_account(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    await service(sessions, FakeInputs(EMERGENCY), clock, account="other").evaluate()
    mine = service(sessions, FakeInputs(EXPANDING), clock)
    decision = await mine.evaluate()
    assert decision.mode is EXP and decision.reason.startswith("EXPANSION: ")  # no mode in force before
    assert [r.account_id for r in await stored(sessions)] == [ACCOUNT]
    assert [r.account_id for r in await stored(sessions, "other")] == ["other"]


async def test_restored_but_undecided_adds_no_limit(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    modes = service(sessions, FakeInputs(EXPANDING), clock)
    with pytest.raises(Conflict, match="no operating mode is pinned"):
        await modes.unpin("nothing to unpin", "alice", None)
    assert modes.restored
    assert modes.limit_layer() is UNDECIDED
    assert (UNDECIDED.layer, UNDECIDED.source, UNDECIDED.new_positions_allowed) == (Layer.MODE, "UNDECIDED", None)
    assert await stored(sessions) == []


async def test_the_trail_keeps_the_last_rows_and_a_restart_reads_as_many(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    inputs = FakeInputs(EXPANDING)
    modes = service(sessions, inputs, clock, keep_decisions=3)
    for value in (EXPANDING, PRESERVING, EMERGENCY):
        inputs.value = value
        await modes.evaluate()
    await modes.pin_mode(OPT, "a", "alice", None)
    await modes.unpin("b", "alice", None)
    assert [e.kind for e in modes.trail()] == ["unpin", "pin", "decision"]
    restarted = service(sessions, FakeInputs(EMERGENCY), clock, keep_decisions=3)
    await restarted.evaluate()
    assert [e.id for e in restarted.trail()] == [e.id for e in modes.trail()]
    assert (restarted.mode, restarted.pin) == (EMER, None)


async def test_a_pin_older_than_the_rows_read_keeps_its_author_after_a_restart_and_in_a_follower(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """The pin's actor and reason come from its own row, even when later decisions pushed it out of
    the `keep_decisions` rows a restart reads, or arrived before a follower's next poll."""
    inputs = FakeInputs(OPTIMIZING)
    modes = service(sessions, inputs, clock, keep_decisions=1)
    follower = service(sessions, FakeInputs(OPTIMIZING), clock, keep_decisions=1)
    await modes.evaluate()
    await follower.sync()
    await modes.pin_mode(PRES, "operator reason", "alice", None)
    for value in (EMERGENCY, OPTIMIZING):
        inputs.value = value
        clock.advance(seconds=1000)
        await modes.evaluate()
    assert [r.kind for r in await stored(sessions)][-1] == "decision"
    await follower.sync()  # the pin and two decisions landed since its last poll
    restarted = service(sessions, inputs, clock, keep_decisions=1)
    await restarted.sync()
    for process in (follower, restarted):
        assert process.pin is not None
        assert (process.pin.mode, process.pin.actor, process.pin.reason) == (PRES, "alice", "operator reason")


# --- pins ------------------------------------------------------------------------------------------


async def test_a_pin_is_stored_then_applied_and_unpin_returns_to_the_decided_mode(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(sessions, inputs, clock)
    await modes.evaluate()
    clock.advance(seconds=1)
    pin = await modes.pin_mode(EMER, "flash crash", "alice", "trace-9")
    assert pin == Pin(EMER, "flash crash", "alice", clock.now)
    assert (modes.pin, modes.mode, modes.decided) == (pin, EMER, OPT)
    assert modes.limit_layer() == mode_layer(EMER)

    rows = await stored(sessions)
    assert len(rows) == 2
    row = rows[1]
    assert (row.kind, row.previous, row.mode, row.decided, row.pinned) == (
        "pin",
        "OPTIMIZATION",
        "EMERGENCY",
        "OPTIMIZATION",
        "EMERGENCY",
    )
    assert (row.actor, row.reason, row.trace_id, row.inputs, row.decided_at) == (
        "alice",
        "flash crash",
        "trace-9",
        {},
        clock.now,
    )
    assert modes.trail()[0].id == row.id

    # Decisions go on under the pin; the pin stays in force.
    inputs.value = PRESERVING
    clock.advance(seconds=1)
    assert (await modes.evaluate()).mode is PRES
    assert (modes.mode, modes.decided) == (EMER, PRES)
    under_pin = (await stored(sessions))[-1]
    assert (under_pin.previous, under_pin.mode, under_pin.decided, under_pin.pinned) == (
        "EMERGENCY",
        "EMERGENCY",
        "PRESERVATION",
        "EMERGENCY",
    )

    clock.advance(seconds=1)
    await modes.unpin("market calm", "bob", None)
    assert (modes.pin, modes.mode) == (None, PRES)
    assert modes.limit_layer() == mode_layer(PRES)
    unpin = (await stored(sessions))[-1]
    assert (unpin.kind, unpin.previous, unpin.mode, unpin.decided, unpin.pinned, unpin.actor, unpin.reason) == (
        "unpin",
        "EMERGENCY",
        "PRESERVATION",
        "PRESERVATION",
        None,
        "bob",
        "market calm",
    )

    with pytest.raises(Conflict):
        await modes.unpin("again", "bob", None)
    assert len(await stored(sessions)) == 4


async def test_a_pin_may_come_before_the_first_decision(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    modes = service(sessions, FakeInputs(EXPANDING), clock)
    await modes.pin_mode(PRES, "new deployment", "alice", None)
    assert (modes.mode, modes.decided, modes.limit_layer()) == (PRES, None, mode_layer(PRES))
    row = (await stored(sessions))[0]
    assert (row.previous, row.mode, row.decided, row.pinned) == (None, "PRESERVATION", None, "PRESERVATION")
    await modes.evaluate()
    assert (modes.mode, modes.decided) == (PRES, EXP)


async def test_a_pin_whose_write_fails_is_not_applied(switch: Switch, clock: FakeClock) -> None:
    modes = service(switch, FakeInputs(OPTIMIZING), clock)
    await modes.evaluate()
    switch.broken = True
    with pytest.raises(OperationalError) as failed:
        await modes.pin_mode(EMER, "flash crash", "alice", None)
    assert database_failure(failed.value) is not None
    assert (modes.pin, modes.mode) == (None, OPT)
    assert modes.limit_layer() == mode_layer(OPT)
    assert [(e.kind, e.id is not None) for e in modes.trail()] == [("decision", True)]

    switch.broken = False
    assert [r.kind for r in await stored(switch)] == ["decision"]
    # Nothing was left behind: the next evaluation writes nothing, the next pin works.
    await modes.evaluate()
    assert len(await stored(switch)) == 1
    await modes.pin_mode(EMER, "flash crash", "alice", None)
    assert modes.mode is EMER

    switch.broken = True
    with pytest.raises(OperationalError):
        await modes.unpin("over", "bob", None)
    assert modes.pin is not None and modes.mode is EMER  # the unpin is not made either
    switch.broken = False
    assert [r.kind for r in await stored(switch)] == ["decision", "pin"]


async def test_a_pin_on_a_database_without_the_table_is_not_applied(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, clock: FakeClock
) -> None:
    modes = service(sessions, FakeInputs(OPTIMIZING), clock)
    await modes.evaluate()
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE mode_decisions"))
    with pytest.raises(DBAPIError):
        await modes.pin_mode(PRES, "drill", "alice", None)
    assert (modes.pin, modes.mode) == (None, OPT)
    assert [e.kind for e in modes.trail()] == ["decision"]


# --- failed writes ---------------------------------------------------------------------------------


async def test_a_tightening_whose_write_fails_is_applied_shown_unstored_and_stored_once_the_database_answers(
    switch: Switch, clock: FakeClock
) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(switch, inputs, clock)
    await modes.evaluate()
    stored_id = (await stored(switch))[0].id

    switch.broken = True
    inputs.value = EMERGENCY
    clock.advance(seconds=5)
    decision = await modes.evaluate()
    assert decision.mode is EMER
    assert (modes.mode, modes.decided, modes.since) == (EMER, EMER, clock.now)
    assert modes.limit_layer() == mode_layer(EMER)  # applied although not stored
    assert modes.persist_error is not None
    assert [(e.id, e.kind, e.previous, e.decided) for e in modes.trail()] == [
        (None, "decision", "OPTIMIZATION", "EMERGENCY"),
        (stored_id, "decision", None, "OPTIMIZATION"),
    ]

    # Still down: nothing new, nothing duplicated, and a pin cannot be made (it must be stored first).
    clock.advance(seconds=5)
    assert (await modes.evaluate()).mode is EMER
    assert [e.id for e in modes.trail()] == [None, stored_id]
    with pytest.raises((ServiceUnavailable, OperationalError)):
        await modes.pin_mode(PRES, "by hand", "alice", None)
    assert (modes.pin, modes.mode) == (None, EMER)

    switch.broken = False
    assert [r.decided for r in await stored(switch)] == ["OPTIMIZATION"]
    clock.advance(seconds=5)
    assert (await modes.evaluate()).mode is EMER
    assert modes.persist_error is None
    rows = await stored(switch)
    assert [(r.kind, r.decided) for r in rows] == [("decision", "OPTIMIZATION"), ("decision", "EMERGENCY")]
    assert rows[1].inputs == EMERGENCY.as_dict()
    assert [e.id for e in modes.trail()] == [rows[1].id, rows[0].id]  # nothing left unstored

    # And what a restart (or another process) reads is the mode in force here.
    restarted = service(switch, FakeInputs(EMERGENCY), clock)
    await restarted.evaluate()
    assert restarted.decided is EMER
    assert len(await stored(switch)) == 2


async def test_a_restart_while_a_tightening_is_unstored_reads_the_stored_mode_and_decides_again(
    switch: Switch, clock: FakeClock
) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(switch, inputs, clock)
    await modes.evaluate()
    switch.broken = True
    inputs.value = PRESERVING
    clock.advance(seconds=5)
    await modes.evaluate()
    assert modes.mode is PRES and modes.persist_error is not None

    switch.broken = False
    restarted = service(switch, FakeInputs(PRESERVING), clock)
    with pytest.raises(Conflict):  # reads the trail without deciding
        await restarted.unpin("none", "alice", None)
    assert (restarted.restored, restarted.decided) == (True, OPT)
    decision = await restarted.evaluate()  # the same inputs tighten again at once
    assert decision.mode is PRES and decision.reason.startswith("tightens to PRESERVATION")
    assert [r.decided for r in await stored(switch)] == ["OPTIMIZATION", "PRESERVATION"]


# --- start, the timer and trade closes -----------------------------------------------------------


async def test_start_waits_for_the_database_with_new_positions_disabled(switch: Switch, clock: FakeClock) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(switch, inputs, clock, interval_seconds=60)
    switch.broken = True
    await modes.start()
    try:
        assert not modes.restored and modes.restore_error is not None
        assert modes.limit_layer() is NOT_RESTORED
        with pytest.raises(ServiceUnavailable, match="could not be read"):
            await modes.evaluate()
        with pytest.raises(ServiceUnavailable, match="could not be read"):
            await modes.pin_mode(PRES, "x", "alice", None)
        with pytest.raises(ServiceUnavailable, match="could not be read"):
            await modes.unpin("x", "alice", None)
        await asyncio.sleep(0.05)
        assert inputs.calls == 0 and modes.mode is None and modes.limit_layer() is NOT_RESTORED

        switch.broken = False
        assert (await modes.evaluate()).mode is OPT
        assert modes.restored and modes.restore_error is None
        assert modes.limit_layer() == mode_layer(OPT)
    finally:
        await modes.stop()
    assert [r.decided for r in await stored(switch)] == ["OPTIMIZATION"]


async def test_a_closed_trade_triggers_an_evaluation(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(sessions, inputs, clock, interval_seconds=60)
    await modes.start()
    try:
        await eventually(lambda: modes.mode is not None)
        assert (modes.mode, modes.evaluations) == (OPT, 1)
        inputs.value = EMERGENCY
        await asyncio.sleep(0.05)
        assert modes.evaluations == 1  # the timer is a minute away
        await modes.on_trade_closed(None)  # type: ignore[arg-type]
        await eventually(lambda: modes.mode is EMER)
        assert modes.evaluations == 2
    finally:
        await modes.stop()
    assert [r.decided for r in await stored(sessions)] == ["OPTIMIZATION", "EMERGENCY"]


# --- history ---------------------------------------------------------------------------------------


async def test_history_pages_newest_first(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    inputs = FakeInputs(OPTIMIZING)
    modes = service(sessions, inputs, clock)
    await modes.evaluate()
    inputs.value = EMERGENCY
    clock.advance(seconds=1)
    await modes.evaluate()
    clock.advance(seconds=1)
    await modes.pin_mode(PRES, "p", "alice", None)
    clock.advance(seconds=1)
    await modes.unpin("u", "alice", None)
    inputs.value = PRESERVING
    clock.advance(seconds=DWELL)
    await modes.evaluate()
    await service(sessions, FakeInputs(EXPANDING), clock, account="other").evaluate()

    rows = await stored(sessions)
    assert len(rows) == 5
    first, second, third, beyond = (
        await modes.history(2, 0),
        await modes.history(2, 2),
        await modes.history(2, 4),
        await modes.history(2, 6),
    )
    assert [len(first), len(second), len(third), len(beyond)] == [2, 2, 1, 0]
    paged = first + second + third
    assert [e.id for e in paged] == [r.id for r in reversed(rows)]
    assert [e.kind for e in paged] == ["decision", "unpin", "pin", "decision", "decision"]
    assert paged[2].actor == "alice" and paged[2].pinned == "PRESERVATION"
    assert [e.id for e in await modes.history(10, 0)] == [e.id for e in modes.trail()]
    assert [e.id for e in await modes.history(1, 1)] == [paged[1].id]
