"""Baseline for `trades_write`: validate the same TradeCreate body, insert one row, commit.

Same stack as the app (FastAPI, SQLAlchemy async, asyncpg, the app's engine settings) and
one session/transaction per request, so the gap to POST /trades is the app's own work
(RiskGuard, sequencing, the decision/trade/equity rows, the larger response).
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI
from sqlalchemy import DateTime, Numeric, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.core.db import create_engine, create_sessionmaker
from app.domains.trading.schemas import TradeCreate


class Base(DeclarativeBase):
    pass


class MinimalTrade(Base):
    __tablename__ = "bench_minimal_trades"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    client_order_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    notional: Mapped[Decimal] = mapped_column(Numeric(38, 18))
    leverage: Mapped[Decimal] = mapped_column(Numeric(38, 18))
    price: Mapped[Decimal] = mapped_column(Numeric(38, 18))
    stop_loss: Mapped[Decimal | None] = mapped_column(Numeric(38, 18), nullable=True)
    confidence: Mapped[Decimal | None] = mapped_column(Numeric(38, 18), nullable=True)
    price_as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


engine = create_engine(os.environ["DATABASE_URL"], int(os.environ.get("DB_POOL_SIZE", "10")))
sessions = create_sessionmaker(engine)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/trades", status_code=201)
async def open_trade(body: TradeCreate) -> dict[str, str | None]:
    row = MinimalTrade(
        id=uuid.uuid4(),
        client_order_id=body.client_order_id,
        symbol=body.symbol,
        side=body.side.value,
        notional=body.notional,
        leverage=body.leverage,
        price=body.price,
        stop_loss=body.stop_loss,
        confidence=body.confidence,
        price_as_of=body.price_as_of,
        created_at=datetime.now(UTC),
    )
    async with sessions() as session, session.begin():
        session.add(row)
    return {"id": str(row.id), "client_order_id": row.client_order_id}
