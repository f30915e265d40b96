"""One poisoned command never fails the other commands of its group-commit batch.

The poison bypasses edge validation (the service is called directly), so these tests hold
even for a value the API would have refused. Run on PostgreSQL and on SQLite.
"""

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, OperationalError

from app.bootstrap import Container, bootstrap
from app.core.errors import InvalidRequest
from app.core.settings import Settings
from app.domains.risk.guard import Side, TradeIntent
from app.domains.risk.models import RiskDecisionRecord
from app.domains.trading.models import Trade
from app.domains.trading.repository import TradingRepository
from app.domains.trading.service import OpenOutcome
from tests.support import QuoteFeed, running

VALID = 40
INTENT = TradeIntent(
    symbol="BTC/USDT:USDT",
    side=Side.LONG,
    notional=Decimal(100),
    leverage=Decimal(2),
    price=Decimal(60000),
    confidence=Decimal("0.8"),
    stop_loss=Decimal(59000),
    source="ensemble",
)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return str(request.getfixturevalue("pg_url")) if request.param == "postgres" else sqlite_url


@pytest.fixture
async def container(database_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Container]:
    built = bootstrap(make_settings(database_url=database_url, paper_starting_balance=100_000))
    async with running(built) as client:
        response = await client.patch(
            "/api/v2/policy/risk-profile", json={"max_open_positions": 1000, "reason": "room for the batch"}
        )
        assert response.status_code == 200, response.text
        feed = built.trading.execution.feed
        assert isinstance(feed, QuoteFeed)
        feed.quote(INTENT.symbol, INTENT.price)  # the market is where the intents expect it
        yield built


def _spy_batches(container: Container) -> list[int]:
    """Sizes of the transactions the service runs, to prove the poison shared a batch."""
    sizes: list[int] = []
    service = container.trading
    original = service._run_batch

    async def spy(commands: Sequence[Any]) -> list[Any]:
        sizes.append(len(commands))
        return await original(commands)

    service._run_batch = spy  # type: ignore[method-assign]
    return sizes


async def _counts(container: Container) -> tuple[int, int]:
    async with container.sessions() as session:
        trades = await session.scalar(select(func.count()).select_from(Trade))
        decisions = await session.scalar(select(func.count()).select_from(RiskDecisionRecord))
    return int(trades or 0), int(decisions or 0)


async def _one_poison_among_valid(
    container: Container, poison: TradeIntent, poison_order_id: str | None = None
) -> tuple[list[Any], Any]:
    sizes = _spy_batches(container)
    calls = [container.trading.open_trade(INTENT, f"valid-{i}", f"trace-valid-{i:04d}") for i in range(VALID)]
    calls.insert(VALID // 2, container.trading.open_trade(poison, poison_order_id, "trace-poison-0001"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sizes[0] == VALID + 1, f"the commands did not share one batch: {sizes}"
    poisoned = results.pop(VALID // 2)
    return results, poisoned


def _dbms(container: Container) -> str:
    return container.engine.dialect.name


async def test_a_nul_in_source_fails_alone(container: Container) -> None:
    if _dbms(container) != "postgresql":
        pytest.skip("SQLite stores NUL; the poison for SQLite is the lone surrogate below")
    valid, poisoned = await _one_poison_among_valid(container, dataclasses.replace(INTENT, source="ens\x00emble"))
    assert isinstance(poisoned, InvalidRequest), poisoned
    assert "cannot be stored" in poisoned.detail
    assert all(isinstance(r, OpenOutcome) and r.trade is not None for r in valid), valid
    assert await _counts(container) == (VALID, VALID)


async def test_a_nul_in_client_order_id_fails_alone(container: Container) -> None:
    if _dbms(container) != "postgresql":
        pytest.skip("SQLite stores NUL")
    valid, poisoned = await _one_poison_among_valid(container, INTENT, poison_order_id="bad\x00id")
    assert isinstance(poisoned, InvalidRequest), poisoned
    assert all(isinstance(r, OpenOutcome) and r.trade is not None for r in valid), valid
    assert await _counts(container) == (VALID, VALID)


async def test_a_lone_surrogate_fails_alone(container: Container) -> None:
    valid, poisoned = await _one_poison_among_valid(container, INTENT, poison_order_id="x\ud800y")
    assert isinstance(poisoned, InvalidRequest), poisoned
    assert all(isinstance(r, OpenOutcome) and r.trade is not None for r in valid), valid
    assert await _counts(container) == (VALID, VALID)


async def test_an_error_raised_by_one_command_fails_it_alone(container: Container) -> None:
    """A NaN confidence makes RiskGuard's comparison raise (decimal.InvalidOperation): a 422, not the batch."""
    valid, poisoned = await _one_poison_among_valid(container, dataclasses.replace(INTENT, confidence=Decimal("NaN")))
    assert isinstance(poisoned, InvalidRequest), poisoned
    assert all(isinstance(r, OpenOutcome) and r.trade is not None for r in valid), valid
    assert await _counts(container) == (VALID, VALID)


async def test_a_clean_batch_is_one_transaction(container: Container) -> None:
    sizes = _spy_batches(container)
    results = await asyncio.gather(
        *(container.trading.open_trade(INTENT, f"clean-{i}", f"trace-clean-{i:04d}") for i in range(VALID))
    )
    assert sizes == [VALID]
    assert all(r.trade is not None for r in results)
    assert await _counts(container) == (VALID, VALID)


async def test_a_lone_poison_gets_its_own_error(container: Container) -> None:
    sizes = _spy_batches(container)
    with pytest.raises(InvalidRequest):
        await container.trading.open_trade(INTENT, "x\ud800y", "trace-alone-0001")
    assert sizes == [1]
    assert await _counts(container) == (0, 0)


def _failing_writes(monkeypatch: pytest.MonkeyPatch, failures: dict[int, Exception]) -> None:
    """Make the n-th call of write_batch (counted from 0) raise the given error."""
    original = TradingRepository.write_batch
    calls = itertools.count()

    async def write_batch(self: TradingRepository, *args: Any) -> None:
        error = failures.get(next(calls))
        if error is not None:
            raise error
        await original(self, *args)

    monkeypatch.setattr(TradingRepository, "write_batch", write_batch)


def _lost_connection() -> OperationalError:
    return OperationalError("INSERT", {}, ConnectionResetError("connection lost"))


async def test_a_connection_failure_still_fails_the_whole_batch(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing is no command's fault: no re-run, every caller gets the error (503)."""
    sizes = _spy_batches(container)
    _failing_writes(monkeypatch, {0: _lost_connection()})
    calls = [container.trading.open_trade(INTENT, f"down-{i}", f"trace-down-{i:04d}") for i in range(10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sizes == [10]
    assert all(isinstance(r, OperationalError) for r in results), results
    assert await _counts(container) == (0, 0)


async def test_a_connection_failure_while_isolating_fails_the_rest(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands re-run before the database went away keep their result; the rest get the error."""
    sizes = _spy_batches(container)
    refused = DataError("INSERT", {}, ValueError("a value the database refuses"))
    _failing_writes(monkeypatch, {0: refused, 3: _lost_connection()})
    calls = [container.trading.open_trade(INTENT, f"mid-{i}", f"trace-mid-{i:04d}") for i in range(6)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sizes == [6, 1, 1, 1]
    assert all(isinstance(r, OpenOutcome) for r in results[:2]), results
    assert all(isinstance(r, OperationalError) for r in results[2:]), results
    assert await _counts(container) == (2, 2)
