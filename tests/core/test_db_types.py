"""Exact decimals and UTC datetimes on SQLite (Postgres is covered in tests/integration)."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from app.core.db import Exact, UTCDateTime, create_engine
from app.core.money import canonical


@pytest.mark.parametrize("value", ["0.1", "0.00012345", "123456789012.123456789", "10000", "1E+4"])
async def test_exact_round_trips_on_sqlite(tmp_path, value: str) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("v", Exact()), Column("at", UTCDateTime())
    )
    at = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    async with engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(insert(table).values(id=1, v=Decimal(value), at=at))
        v, stored_at = (await conn.execute(select(table.c.v, table.c.at))).one()
    await engine.dispose()
    assert v == Decimal(value) and isinstance(v, Decimal)
    assert stored_at == at and stored_at.tzinfo == UTC


@pytest.mark.parametrize(
    "value,text", [("1E+4", "10000"), ("448.00350000", "448.0035"), ("0.000001", "0.000001"), ("-0", "0")]
)
def test_canonical_decimal_text(value: str, text: str) -> None:
    assert canonical(Decimal(value)) == text
