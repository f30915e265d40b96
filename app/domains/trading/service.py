"""Trading commands on the paper account: open (through RiskGuard), close, reset safety.

Every command of the account goes through one Sequencer, and each batch runs in one
transaction holding the account row lock: checks are made against committed state,
in order, also across workers sharing one Postgres. Events are published after commit.
"""

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, DecimalException
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import Event, EventBus
from app.core.clock import utcnow
from app.core.errors import (
    AppError,
    Conflict,
    InvalidRequest,
    NotFound,
    PriceDeviation,
    ServiceUnavailable,
)
from app.core.sequencer import Sequencer
from app.domains.execution.binance import ReadyState
from app.domains.execution.exchange import ExchangeError, OrderRejected
from app.domains.execution.feed import NoPrice
from app.domains.execution.models import ExitLegRecord, ExitPlanRecord, FillRecord, Order, Position, PositionEvent
from app.domains.execution.paper import Bar
from app.domains.execution.reading import MarketReading
from app.domains.execution.repository import ExecutionRepository
from app.domains.execution.service import Closed, ExecRows, OpenedView, PaperExecution
from app.domains.exits.arbiter import ExitSource
from app.domains.exits.plan import ExitPlan, PlanRefused
from app.domains.markets.catalog import (
    BelowExchangeMinimum,
    Market,
    MarketCatalog,
    OutOfRange,
    UnknownSymbol,
)
from app.domains.policy.state import PolicySnapshot
from app.domains.policy.store import PolicyStore
from app.domains.risk.guard import (
    AccountState,
    DenialCode,
    Reason,
    RiskDecision,
    RiskGuard,
    TradeIntent,
    price_deviation_pct,
)
from app.domains.risk.limits import HARD_LIMITS
from app.domains.risk.models import RiskDecisionRecord
from app.domains.risk.stack import EffectiveLimits, NotionalLimit, max_notional
from app.domains.safety.events import SafetyStateChanged
from app.domains.safety.governor import SafetyGovernor, SafetyState
from app.domains.trading.events import TradeClosed, TradeDenied, TradeOpened
from app.domains.trading.models import Account, Trade
from app.domains.trading.repository import Row, TradingRepository, equity_snapshot

USDT = Decimal("0.00000001")
Clock = Callable[[], datetime]
logger = logging.getLogger(__name__)
LIVE_POLL_SECONDS = 15.0  # a live exchange's open orders are compared this often between bars (weight 80)
RECONCILE_RETRY_SECONDS = 60.0  # a live exchange not reconciled is tried again this often (82 weight)


@dataclass(frozen=True)
class Preview:
    """What POST /trades would decide now, and the largest notional the stack allows (nothing stored)."""

    decision: RiskDecision
    largest: NotionalLimit
    limits: EffectiveLimits


@dataclass(frozen=True)
class OpenTrade:
    intent: TradeIntent  # with the market price the feed gave (`market_price`)
    market: Market
    quantity: Decimal
    client_order_id: str | None
    request_hash: str
    trace_id: str
    atr: Decimal | None = None  # of the feed's last closed bars: the exit plan is dynamic with it
    reading: MarketReading | None = None  # the market at the last closed bar: the kill score's baseline


@dataclass(frozen=True)
class CloseTrade:
    trade_id: uuid.UUID
    price: Decimal | None  # what the caller expects; None: at the market
    trace_id: str
    amount: Decimal | None = None  # contracts to close; None: all
    source: ExitSource = ExitSource.OPERATOR
    reason: str | None = None


@dataclass(frozen=True)
class ApplyBars:
    """The position monitor's command: closed bars of one symbol, applied in order."""

    symbol: str
    bars: tuple[tuple[Bar, Decimal | None], ...]
    trace_id: str
    readings: Mapping[int, MarketReading] = field(default_factory=dict)  # by bar open time


@dataclass(frozen=True)
class ResetSafety:
    reason: str
    actor: str
    trace_id: str


@dataclass(frozen=True)
class PollExchange:
    """The live exchange's fills between bars, recorded under the account lock."""

    trace_id: str


@dataclass(frozen=True)
class Reconcile:
    """Compare the live exchange with the stored positions and orders, serialized with the trades."""


Command = OpenTrade | CloseTrade | ResetSafety | ApplyBars | Reconcile | PollExchange


@dataclass(frozen=True)
class OpenOutcome:
    decision: Row
    trade: Row | None
    replayed: bool
    opened: OpenedView | None = None  # what the opening created (a replay reads it back)


@dataclass
class _Batch:
    """State shared by the commands of one transaction, and the rows it will write."""

    account: Row
    safety: SafetyState
    policy: PolicySnapshot
    now: datetime
    decisions: dict[str, Row]
    trades: dict[uuid.UUID, Row]
    new_decisions: list[Row] = field(default_factory=list)
    new_trades: list[Row] = field(default_factory=list)
    closed_trades: list[Row] = field(default_factory=list)
    snapshots: list[Row] = field(default_factory=list)
    audit: list[Row] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    execution: ExecRows = field(default_factory=ExecRows)


def request_hash(intent: TradeIntent) -> str:
    """Fingerprint of an intent, to tell a retry from a reuse of its client_order_id."""
    fields = (
        intent.symbol,
        intent.side.value,
        intent.notional,
        intent.leverage,
        "market" if intent.at_market else intent.price,
        intent.price_as_of.isoformat() if intent.price_as_of else None,
        intent.confidence,
        intent.stop_loss,
        intent.source,
    )
    return hashlib.sha256("\x1f".join(map(str, fields)).encode()).hexdigest()


class _CommandFailed(Exception):
    """A command of a batch raised an unexpected error; the batch is re-run one command at a time."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def _connection_failure(exc: Exception) -> bool:
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    )


def _isolatable(exc: Exception) -> bool:
    """Whether a failed batch may be the fault of one of its commands rather than of the database."""
    if isinstance(exc, _CommandFailed):
        return True
    if isinstance(exc, StatementError):
        return not _connection_failure(exc)
    return isinstance(exc, ValueError | TypeError | ArithmeticError)


def _describe(exc: BaseException) -> str:
    """The driver's message (never the SQL or its parameters): first line, ASCII, bounded."""
    if isinstance(exc, _CommandFailed):
        exc = exc.error
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (current.orig if isinstance(current, StatementError) else None)
    return chain


def _sqlstate_class(exc: BaseException) -> str | None:
    """The SQLSTATE class of a PostgreSQL error ("22": data exception, "23": integrity)."""
    for cause in _causes(exc):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and len(state) == 5:
            return state[:2]
    return None


def _own_error(exc: Exception) -> Exception:
    """The error of a command that failed alone: a 4xx when what it asked to store is at fault."""
    error = exc.error if isinstance(exc, _CommandFailed) else exc
    causes = _causes(error)
    if any(isinstance(c, DecimalException) for c in causes):
        return InvalidRequest(f"a number of this request is out of the computable range ({_describe(error)})")
    state = _sqlstate_class(error)
    if isinstance(error, IntegrityError) or state == "23":
        return Conflict(f"the request conflicts with stored data ({_describe(error)})")
    from_database = isinstance(error, StatementError)
    if state == "22" or any(
        isinstance(c, DataError | UnicodeError) or (from_database and isinstance(c, ValueError)) for c in causes
    ):
        # A value the database or its driver refuses (NUL, a lone surrogate, a number out of range).
        logger.warning("command_value_refused", extra={"error": _describe(error)})
        return InvalidRequest(f"a value of this request cannot be stored ({_describe(error)})")
    logger.error("command_failed", exc_info=error)
    return error


HARD_LIMITS_JSON = {name: float(getattr(HARD_LIMITS, name)) for name in HARD_LIMITS.__slots__}


class TradingService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: PolicyStore,
        guard: RiskGuard,
        governor: SafetyGovernor,
        markets: MarketCatalog,
        bus: EventBus,
        *,
        account_id: str,
        starting_balance: Decimal,
        fee_rate: Decimal,
        execution: PaperExecution,
        clock: Clock = utcnow,
        max_batch: int = 64,
        exit_policy: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._execution = execution
        self._execution_stale = False
        self._last_reconcile = 0.0  # monotonic time of the last reconciliation attempt
        self._last_poll = 0.0  # and of the last poll of a live exchange's orders
        self._exit_policy = exit_policy
        self._policy = policy
        self._guard = guard
        self._governor = governor
        self.markets = markets
        self._bus = bus
        self.account_id = account_id
        self._starting_balance = starting_balance
        self._fee_rate = fee_rate
        self.clock = clock
        self._sequencer: Sequencer[Command] = Sequencer(self._process, max_batch=max_batch)

    async def ensure_account(self) -> None:
        """Create the paper account and its governor state on first start.

        Idempotent under concurrency: every worker of a fresh database runs this at once, so each
        row is inserted only if absent (never a unique violation that would stop the server), and
        the first equity snapshot is written only by the worker whose insert created the account.
        """
        async with self._sessions() as session, session.begin():
            repo = TradingRepository(session)
            now = self.clock()
            balance = self._starting_balance
            created = await repo.insert_account_if_absent(
                {
                    "id": self.account_id,
                    "starting_balance": balance,
                    "equity": balance,
                    "open_positions": 0,
                    "open_notional": Decimal(0),
                    "used_margin": Decimal(0),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if created:
                await repo.insert_equity_snapshots(
                    [equity_snapshot(self.account_id, balance, "account_created", None, now)]
                )
            account, safety = await repo.lock_account(self.account_id, for_update=False)
            if account is None:  # pragma: no cover - inserted above or committed by another worker
                raise ServiceUnavailable(f"account {self.account_id!r} could not be created")
            if safety is None:
                await repo.insert_safety_if_absent(self.account_id, SafetyState.initial(account["equity"], now))
        await self.load_execution()

    async def load_execution(self) -> None:
        """Rebuild the paper exchange's book (or the live exchange's mirror) and the open positions from the
        tables; a live exchange is then reconciled with them before any new trade."""
        async with self._sessions() as session:
            account = await TradingRepository(session).get_account(self.account_id)
            await self._execution.load(session, account.equity if account is not None else Decimal(0))
        self._last_reconcile = time.monotonic()
        await self._execution.reconcile()

    async def reconcile(self) -> ReadyState:
        """Reconcile the live exchange now (through the sequencer, after any failed batch's reload)."""
        self._last_reconcile = time.monotonic()
        state: ReadyState = await self._sequencer.submit(Reconcile())
        return state

    async def housekeeping(self) -> None:
        """The monitor's chores with a live exchange: while it is not reconciled, try again every
        RECONCILE_RETRY_SECONDS (a discrepancy stays until someone fixes it; an outage passes); once it is,
        record its fills between bars every LIVE_POLL_SECONDS (a stop it filled at 10:15 is not left
        open until the 11:00 bar)."""
        execution = self._execution
        if not execution.live or not execution.loaded:
            return
        if not execution.venue.ready().reconciled:
            if time.monotonic() - self._last_reconcile >= RECONCILE_RETRY_SECONDS:
                await self.reconcile()
            return
        if execution.open_rows() and time.monotonic() - self._last_poll >= LIVE_POLL_SECONDS:
            self._last_poll = time.monotonic()
            await self._sequencer.submit(PollExchange(uuid.uuid4().hex))

    @property
    def execution(self) -> PaperExecution:
        return self._execution

    async def close(self) -> None:
        await self._sequencer.close()

    def market(self, symbol: str) -> Market:
        try:
            return self.markets.resolve(symbol)
        except UnknownSymbol as exc:
            raise InvalidRequest(str(exc)) from exc

    # Commands -----------------------------------------------------------------------

    async def open_trade(self, intent: TradeIntent, client_order_id: str | None, trace_id: str) -> OpenOutcome:
        market = self.market(intent.symbol)
        ready = self._execution.venue.ready()
        if not ready.reconciled:
            raise ServiceUnavailable(
                f"the exchange ({self._execution.name}) is not ready for new trades: {ready.reason}"
            )
        mark = intent.market_price if intent.market_price is not None else await self._mark(market.symbol)
        try:
            quantity = market.quantity_for(intent.notional, mark)
        except BelowExchangeMinimum as exc:
            raise InvalidRequest(str(exc)) from exc
        except OutOfRange as exc:
            raise InvalidRequest(str(exc), fields=["notional", "price"]) from exc
        priced = replace(intent, market_price=mark)
        atr = await self._execution.atr(market.symbol, self._execution.config.atr_bars)
        reading = await self._execution.reading(market.symbol)
        command = OpenTrade(priced, market, quantity, client_order_id, request_hash(intent), trace_id, atr, reading)
        outcome: OpenOutcome = await self._sequencer.submit(command)
        return outcome

    def market_time(self) -> datetime:
        """Now on the price feed's clock (simulated for the replay): the time fills and signals are on."""
        return self._execution.feed.now()

    async def market_price(self, symbol: str) -> Decimal:
        """The feed's price of `symbol` now (503 when it has none)."""
        return await self._mark(self.market(symbol).symbol)

    async def _mark(self, symbol: str) -> Decimal:
        """The feed's price now (also the mark the batch uses); no price is a 503, never a guess."""
        if not self._execution.loaded:
            raise ServiceUnavailable("the open positions are not loaded yet (waiting for the database)")
        try:
            return await self._execution.refresh_mark(symbol)
        except NoPrice as exc:
            raise ServiceUnavailable(f"no market price for {symbol}: {exc}") from exc

    async def close_trade(
        self,
        trade_id: uuid.UUID,
        price: Decimal | None,
        trace_id: str,
        *,
        amount: Decimal | None = None,
        reason: str | None = None,
    ) -> Row:
        """Close the trade's position (or `amount` contracts of it) at the market, through the exit
        arbiter. `price` is what the caller expects: a market further than MAX_PRICE_DEVIATION_PCT is refused."""
        position = self._execution.position_of(trade_id)
        if position is not None:
            await self._mark(position["symbol"])
        command = CloseTrade(trade_id, price, trace_id, amount, ExitSource.OPERATOR, reason)
        trade: Row = await self._sequencer.submit(command)
        return trade

    async def close_position(
        self,
        position_id: uuid.UUID,
        price: Decimal | None,
        trace_id: str,
        *,
        amount: Decimal | None,
        reason: str | None,
    ) -> Position:
        position = await self.position(position_id)
        if position.status != "OPEN":
            raise Conflict(f"position {position_id} is already {position.status}", position_id=str(position_id))
        await self.close_trade(position.trade_id, price, trace_id, amount=amount, reason=reason)
        return await self.position(position_id)

    # Positions and orders (reads) ----------------------------------------------------

    async def positions(self, status: str | None, limit: int, offset: int) -> tuple[list[Position], int]:
        async with self._sessions() as session:
            return await ExecutionRepository(session).list_positions(self.account_id, status, limit, offset)

    async def position(self, position_id: uuid.UUID) -> Position:
        async with self._sessions() as session:
            found = await ExecutionRepository(session).position(self.account_id, position_id)
        if found is None:
            raise NotFound(f"position {position_id} not found")
        return found

    async def position_detail(self, position_id: uuid.UUID) -> tuple[Position, list[FillRecord], list[PositionEvent]]:
        position = await self.position(position_id)
        async with self._sessions() as session:
            repo = ExecutionRepository(session)
            return position, await repo.fills_of(position_id), await repo.position_events(position_id)

    async def opened_view(self, trade_id: uuid.UUID) -> OpenedView | None:
        """What a trade's opening created, read back (for a replayed POST /trades)."""
        async with self._sessions() as session:
            repo = ExecutionRepository(session)
            position = await repo.position_of_trade(self.account_id, trade_id)
            if position is None:
                return None
            plan, legs = await repo.plan(position.id)
            orders, _ = await repo.list_orders(self.account_id, None, position.id, 100, 0)
        if plan is None:
            return None
        # as placed: the entry, then the legs' orders in the plan's order, then anything after
        placed = {"ENTRY": -1} | {leg.order_client_id: leg.seq for leg in legs if leg.order_client_id}
        rank = {o.client_order_id: placed.get("ENTRY" if o.purpose == "ENTRY" else o.client_order_id) for o in orders}
        ordered = sorted(orders, key=lambda o: (rank[o.client_order_id] is None, rank[o.client_order_id] or 0))
        return OpenedView(_as_row(position), _as_row(plan), [_as_row(x) for x in legs], [_as_row(o) for o in ordered])

    async def exit_plan(self, position_id: uuid.UUID) -> tuple[Position, ExitPlanRecord, list[ExitLegRecord]]:
        position = await self.position(position_id)
        async with self._sessions() as session:
            plan, legs = await ExecutionRepository(session).plan(position_id)
        if plan is None:
            raise NotFound(f"position {position_id} has no exit plan")
        return position, plan, legs

    async def orders(
        self, status: str | None, position_id: uuid.UUID | None, limit: int, offset: int
    ) -> tuple[list[Order], int]:
        async with self._sessions() as session:
            return await ExecutionRepository(session).list_orders(self.account_id, status, position_id, limit, offset)

    async def apply_bars(self, symbol: str, trace_id: str) -> int:
        """Apply the feed's bars of `symbol` closed since the open positions last saw one (the monitor)."""
        cursor = self._execution.cursor(symbol)
        bars = await self._execution.feed.closed_bars(symbol, cursor)
        if not bars:
            return 0
        with_rates = tuple([(bar, await self._execution.feed.funding_rate(symbol, bar.open_ms)) for bar in bars])
        readings = await self._execution.readings(symbol, bars)
        applied: int = await self._sequencer.submit(ApplyBars(symbol, with_rates, trace_id, readings))
        return applied

    async def reset_safety(self, reason: str, actor: str, trace_id: str) -> SafetyState:
        state: SafetyState = await self._sequencer.submit(ResetSafety(reason, actor, trace_id))
        return state

    async def _process(self, commands: Sequence[Command]) -> list[Any]:
        """Run a batch in one transaction (the fast path). If it fails for a reason that may
        belong to one command (a value the database refuses, an unexpected error), nothing of
        it was stored: the commands then run again one per transaction, so only that one fails.
        A failure of the database itself still fails the whole batch."""
        try:
            return await self._run_batch(commands)
        except Exception as exc:
            await self._reload_after_failure()
            if not _isolatable(exc):
                raise
            if len(commands) == 1:
                return [_own_error(exc)]
            logger.warning("batch_failed_isolating", extra={"commands": len(commands), "error": _describe(exc)})
        return await self._run_one_by_one(commands)

    async def _reload_after_failure(self) -> None:
        """A rolled-back batch may have changed the book: the next batch rebuilds it from the database,
        inside its own transaction (no extra wait here when the database is what failed). A live exchange
        may hold what was not stored: no new trade until it is reconciled again."""
        self._execution_stale = True
        self._execution.invalidate("a batch failed: the exchange is reconciled again before any new trade")

    async def _run_one_by_one(self, commands: Sequence[Command]) -> list[Any]:
        results: list[Any] = []
        for index, command in enumerate(commands):
            try:
                results.extend(await self._run_batch([command]))
            except Exception as exc:  # noqa: BLE001 - handed to this command's caller as its result
                await self._reload_after_failure()
                if not _isolatable(exc):
                    # The database failed, not this command: it and the rest fail (nothing stored).
                    results.extend([exc] * (len(commands) - index))
                    break
                results.append(_own_error(exc))
        return results

    async def _run_batch(self, commands: Sequence[Command]) -> list[Any]:
        async with self._sessions() as session, session.begin():
            repo = TradingRepository(session)
            batch, stored_safety = await self._begin_batch(repo, commands)
            if self._execution_stale:  # a batch failed since: the book is what the database holds again
                await self._execution.load(session, batch.account["equity"])
                self._execution_stale = False
            results: list[Any] = []
            for command in commands:
                try:
                    if isinstance(command, OpenTrade):
                        results.append(await self._open(batch, command))
                    elif isinstance(command, CloseTrade):
                        results.append(await self._close(batch, command))
                    elif isinstance(command, ApplyBars):
                        results.append(await self._apply_bars(batch, command))
                    elif isinstance(command, Reconcile):
                        results.append(await self._execution.reconcile())
                    elif isinstance(command, PollExchange):
                        results.append(await self._poll_exchange(batch, command))
                    else:
                        results.append(await self._reset(batch, command))
                except AppError as exc:
                    results.append(exc)
                except Exception as exc:
                    raise _CommandFailed(exc) from exc
            await repo.write_batch(batch.account, batch.new_decisions, batch.new_trades, batch.snapshots, batch.audit)
            await repo.close_trades(batch.closed_trades)
            await ExecutionRepository(session).write(batch.execution)
            if batch.safety != stored_safety:
                await repo.save_safety(self.account_id, batch.safety, exists=stored_safety is not None)
        self._bus.publish_all(batch.events)
        return results

    async def _begin_batch(
        self, repo: TradingRepository, commands: Sequence[Command]
    ) -> tuple[_Batch, SafetyState | None]:
        account, stored = await repo.lock_account(self.account_id)
        if account is None:
            raise ServiceUnavailable(f"account {self.account_id!r} is not initialised; run the migrations")
        now = self.clock()
        safety = self._governor.roll_day(stored or SafetyState.initial(account["equity"], now), account["equity"], now)
        order_ids = [c.client_order_id for c in commands if isinstance(c, OpenTrade) and c.client_order_id]
        decisions = await repo.decisions_by_client_order_id(order_ids)
        trade_ids = [c.trade_id for c in commands if isinstance(c, CloseTrade)]
        if any(isinstance(c, ApplyBars | PollExchange) for c in commands):  # may close any of them (emergency: all)
            trade_ids += [p["trade_id"] for p in self._execution.open_rows()]
        trade_ids += [d["trade_id"] for d in decisions.values() if d["trade_id"] is not None]
        trades = await repo.trades_by_id(trade_ids)
        return _Batch(account, safety, self._policy.snapshot, now, decisions, trades), stored

    async def _open(self, b: _Batch, cmd: OpenTrade) -> OpenOutcome:
        intent = cmd.intent
        if cmd.client_order_id and cmd.client_order_id in b.decisions:
            original = b.decisions[cmd.client_order_id]
            if original["request_hash"] != cmd.request_hash:
                raise Conflict(
                    f"client_order_id {cmd.client_order_id!r} was used for a different request",
                    client_order_id=cmd.client_order_id,
                )
            replayed = b.trades.get(original["trade_id"]) if original["trade_id"] else None
            return OpenOutcome(original, replayed, replayed=True)

        account = b.account
        execution = self._execution
        state = AccountState(
            equity=account["equity"] + execution.unrealized(),  # marked to market
            open_positions=account["open_positions"],
            open_notional=account["open_notional"],
            used_margin=account["used_margin"],
            day_start_equity=b.safety.day_start_equity,
        )
        profile = b.policy.profile
        try:
            decision = self._guard.check(
                intent,
                state,
                profile,
                self._governor.view(b.safety, b.now),
                now=b.now,
                trace_id=cmd.trace_id,
                kill_switch=b.policy.state.kill_switch,
                blocked_symbols=b.policy.state.blocked_symbols,
            )
            risk_pct = decision.risk_pct.quantize(USDT, rounding=ROUND_HALF_UP)
        except DecimalException as exc:
            # Only reachable with extreme combinations (a stop far from a tiny price): no state changed yet.
            raise InvalidRequest(
                f"notional {intent.notional}, price {intent.price} and stop_loss {intent.stop_loss} "
                "put this trade's risk out of the computable range",
                fields=["notional", "price", "stop_loss"],
            ) from exc
        plan: ExitPlan | PlanRefused | None = None
        if decision.allowed:
            assert intent.market_price is not None
            plan = execution.plan_for(
                intent.symbol,
                intent.side.value,
                cmd.quantity,
                intent.leverage,
                intent.market_price,
                intent.stop_loss,
                self._exit_policy(),
                cmd.atr,
                cmd.reading.regime.value if cmd.reading is not None else None,
            )
            if isinstance(plan, PlanRefused):
                refused = Reason(DenialCode.EXIT_PLAN_REFUSED, f"EXIT_PLAN_REFUSED: {plan.reason}")
                decision = replace(decision, allowed=False, reasons=(refused,))
        record: Row = {
            "id": uuid.uuid4(),
            "account_id": self.account_id,
            "client_order_id": cmd.client_order_id,
            "request_hash": cmd.request_hash,
            "allowed": decision.allowed,
            "reasons": [r.as_dict() for r in decision.reasons],
            "assumptions": list(decision.assumptions),
            "profile_name": decision.profile_name,
            "limits": {
                "profile": b.policy.limits[profile.name],
                "effective_max_leverage": float(decision.max_leverage),
                "leverage_multiplier": float(b.safety.leverage_multiplier),
                "hard": HARD_LIMITS_JSON,
                "equity": str(state.equity),
                "open_positions": state.open_positions,
                "open_notional": str(state.open_notional),
                "policy_version": b.policy.state.version,
                "market_price": str(intent.market_price),
            },
            "symbol": intent.symbol,
            "side": intent.side.value,
            "notional": intent.notional,
            "leverage": intent.leverage,
            "price": intent.price,
            "stop_loss": intent.stop_loss,
            "confidence": intent.confidence,
            "risk_pct": risk_pct,
            "source": intent.source,
            "trade_id": None,
            "trace_id": cmd.trace_id,
            "created_at": b.now,
        }
        if cmd.client_order_id:
            b.decisions[cmd.client_order_id] = record
        b.new_decisions.append(record)
        if not decision.allowed:
            b.events.append(
                TradeDenied(
                    decision_id=str(record["id"]),
                    symbol=intent.symbol,
                    side=intent.side.value,
                    reason_codes=tuple(r.code.value for r in decision.reasons),
                    profile_name=decision.profile_name,
                    trace_id=cmd.trace_id,
                )
            )
            return OpenOutcome(record, None, replayed=False)

        assert isinstance(plan, ExitPlan) and intent.market_price is not None
        trade: Row = {
            "id": uuid.uuid4(),
            "account_id": self.account_id,
            "client_order_id": cmd.client_order_id,
            "symbol": intent.symbol,
            "side": intent.side.value,
            "leverage": intent.leverage,
            "requested_notional": intent.notional,
            "quantity": cmd.quantity,
            "stop_loss": intent.stop_loss,
            "status": "OPEN",
            "exit_price": None,
            "exit_fee": None,
            "realized_pnl": None,
            "confidence": intent.confidence,
            "signal_source": intent.source,
            "risk_profile_name": decision.profile_name,
            "decision_id": record["id"],
            "trace_id": cmd.trace_id,
            "opened_at": b.now,
            "closed_at": None,
            "close_trace_id": None,
        }
        # The exchange sets the fill: the entry, then the plan's protective orders.
        try:
            opened = await execution.open(
                b.execution, trade, plan, intent.market_price, b.now, account["equity"], cmd.reading
            )
        except OrderRejected as exc:  # nothing happened on the exchange: a denial like the others
            refused = Reason(DenialCode.EXCHANGE_REJECTED, f"EXCHANGE_REJECTED: {exc}")
            record.update(allowed=False, reasons=[refused.as_dict()])
            b.events.append(
                TradeDenied(
                    decision_id=str(record["id"]),
                    symbol=intent.symbol,
                    side=intent.side.value,
                    reason_codes=(refused.code.value,),
                    profile_name=decision.profile_name,
                    trace_id=cmd.trace_id,
                )
            )
            return OpenOutcome(record, None, replayed=False)
        except ExchangeError as exc:  # unavailable: nothing happened, nothing is stored
            b.new_decisions.remove(record)
            if cmd.client_order_id:
                b.decisions.pop(cmd.client_order_id, None)
            raise ServiceUnavailable(f"the exchange did not take the order: {exc}") from exc
        notional = (opened.amount * opened.fill_price).quantize(USDT, rounding=ROUND_HALF_UP)
        trade.update(
            quantity=opened.amount,
            entry_price=opened.fill_price,
            notional=notional,
            margin=(notional / intent.leverage).quantize(USDT, rounding=ROUND_HALF_UP),
            entry_fee=opened.fee,
        )
        record["trade_id"] = trade["id"]
        self._settle(b)
        account["open_positions"] += 1
        b.trades[trade["id"]] = trade
        b.new_trades.append(trade)
        b.snapshots.append(equity_snapshot(self.account_id, account["equity"], "trade_opened", trade["id"], b.now))
        b.events.append(
            TradeOpened(
                trade_id=str(trade["id"]),
                symbol=intent.symbol,
                side=intent.side.value,
                notional=notional,
                leverage=intent.leverage,
                profile_name=decision.profile_name,
                trace_id=cmd.trace_id,
            )
        )
        for done in opened.closed:  # the exchange refused its protective orders: closed at once
            await self._finish_trade(b, done, cmd.trace_id)
        return OpenOutcome(record, trade, replayed=False, opened=execution.opened_view(b.execution, opened.position))

    def _exposure(self, b: _Batch) -> float:
        """The share of the hard total-exposure limit in use (open notional / (marked equity x limit)): the
        harvest policy closes on weaker kill evidence as the book fills."""
        equity = b.account["equity"] + self._execution.unrealized()
        room = equity * self._guard.config.hard.max_total_exposure_pct / 100
        return float(b.account["open_notional"] / room) if room > 0 else 1.0

    def _settle(self, b: _Batch) -> None:
        """Apply the exchange side's cash, exposure and margin changes to the account row."""
        rows, account = b.execution, b.account
        if rows.cash or rows.notional or rows.margin:
            account["equity"] += rows.cash
            account["open_notional"] += rows.notional
            account["used_margin"] += rows.margin
            rows.cash = rows.notional = rows.margin = Decimal(0)
            account["updated_at"] = b.now

    async def _close(self, b: _Batch, cmd: CloseTrade) -> Row:
        trade = b.trades.get(cmd.trade_id)
        if trade is None or trade["account_id"] != self.account_id:
            raise NotFound(f"trade {cmd.trade_id} not found")
        if trade["status"] != "OPEN":
            raise Conflict(f"trade {cmd.trade_id} is already {trade['status']}", trade_id=str(cmd.trade_id))
        position = self._execution.position_of(trade["id"])
        if position is None:
            raise Conflict(f"trade {cmd.trade_id} has no open position", trade_id=str(cmd.trade_id))
        mark = self._execution.mark_for(trade["symbol"])
        if cmd.price is not None:
            self._check_deviation(trade["symbol"], cmd.price, mark)
        reason = cmd.reason or ("close requested" if cmd.amount is None else f"partial close of {cmd.amount} requested")
        try:
            closed = await self._execution.close(
                b.execution, str(position["id"]), mark, b.now, amount=cmd.amount, source=cmd.source, reason=reason
            )
        except OrderRejected as exc:
            raise Conflict(f"the exchange refused the close: {exc}", trade_id=str(cmd.trade_id)) from exc
        except ExchangeError as exc:
            raise ServiceUnavailable(f"the exchange did not take the close: {exc}") from exc
        self._settle(b)
        for done in closed:
            await self._finish_trade(b, done, cmd.trace_id)
        return trade

    def _check_deviation(self, symbol: str, expected: Decimal, mark: Decimal) -> None:
        limit = self._guard.config.max_price_deviation_pct
        deviation = price_deviation_pct(mark, expected)
        if deviation > limit:
            raise PriceDeviation(
                f"PRICE_DEVIATION: the market for {symbol} is at {mark}, {deviation.quantize(Decimal('0.01'))}% from "
                f"the expected {expected} (MAX_PRICE_DEVIATION_PCT {limit})",
                market_price=str(mark),
            )

    async def _poll_exchange(self, b: _Batch, cmd: PollExchange) -> int:
        try:
            closed = await self._execution.poll_exchange(b.execution, b.now)
        except ExchangeError as exc:
            raise ServiceUnavailable(f"the exchange did not answer the poll: {exc}") from exc
        self._settle(b)
        for done in closed:
            await self._finish_trade(b, done, cmd.trace_id)
        return len(closed)

    async def _apply_bars(self, b: _Batch, cmd: ApplyBars) -> int:
        """The monitor's bars: fills, funding, liquidations and trailing stops, then the governor."""
        applied = 0
        for bar, rate in cmd.bars:
            exposure = self._exposure(b)
            reading = cmd.readings.get(bar.open_ms)
            try:
                closed = await self._execution.apply_bar(b.execution, bar, rate, b.now, reading, exposure)
            except ExchangeError as exc:  # what happened before is recorded; the monitor tries again
                raise ServiceUnavailable(f"the exchange did not take an exit of {cmd.symbol}: {exc}") from exc
            self._settle(b)
            for done in closed:
                await self._finish_trade(b, done, cmd.trace_id)
            applied += 1
        marked = b.account["equity"] + self._execution.unrealized()
        before = b.safety
        b.safety = self._governor.evaluate(before, marked, b.policy.profile, b.now)
        await self._note_safety_change(b, before, cmd.trace_id)
        if b.safety.emergency and before.emergency and self._execution.open_rows():
            # an emergency left over from before
            await self._flatten(b, f"SafetyGovernor emergency: {b.safety.reason}", cmd.trace_id)
        return applied

    async def _finish_trade(self, b: _Batch, done: Closed, trace_id: str) -> None:
        """A position closed (by a stop, a target, a liquidation, an operator): its trade is closed."""
        position = done.position
        trade = b.trades.get(position["trade_id"])
        if trade is None:
            raise ServiceUnavailable(f"the trade of position {position['id']} was not read with the batch")
        pnl = position["realized_pnl"]
        trade.update(
            status="CLOSED",
            exit_price=done.exit_price,
            exit_fee=done.exit_fee,
            realized_pnl=pnl,
            closed_at=b.now,
            close_trace_id=trace_id,
        )
        b.closed_trades.append(trade)
        account = b.account
        account["open_positions"] -= 1
        account["updated_at"] = b.now
        b.snapshots.append(equity_snapshot(self.account_id, account["equity"], "trade_closed", trade["id"], b.now))
        b.events.append(
            TradeClosed(
                trade_id=str(trade["id"]),
                symbol=trade["symbol"],
                realized_pnl=pnl,
                equity_after=account["equity"],
                trace_id=trace_id,
            )
        )
        before = b.safety
        b.safety = self._governor.on_trade_closed(before, pnl, account["equity"], b.policy.profile, b.now)
        await self._note_safety_change(b, before, trace_id)

    async def _reset(self, b: _Batch, cmd: ResetSafety) -> SafetyState:
        before = b.safety
        if not before.emergency:
            raise Conflict(f"no emergency to reset (state {before.state.value}: {before.reason})")
        b.safety = self._governor.reset_emergency(before, b.account["equity"], b.policy.profile, b.now, cmd.reason)
        b.audit.append(
            {
                "kind": "SAFETY_RESET",
                "from_value": {"state": before.state.value, "emergency": True, "reason": before.reason},
                "to_value": {"state": b.safety.state.value, "emergency": False, "reason": b.safety.reason},
                "reason": cmd.reason,
                "actor": cmd.actor,
                "trace_id": cmd.trace_id,
                "created_at": b.now,
            }
        )
        await self._note_safety_change(b, before, cmd.trace_id)
        return b.safety

    async def _note_safety_change(self, b: _Batch, before: SafetyState, trace_id: str) -> None:
        after = b.safety
        if (before.state, before.emergency, before.leverage_multiplier) == (
            after.state,
            after.emergency,
            after.leverage_multiplier,
        ):
            return
        b.events.append(
            SafetyStateChanged(
                from_state=before.state.value,
                to_state=after.state.value,
                reason=after.reason,
                emergency=after.emergency,
                daily_drawdown_pct=after.daily_drawdown_pct(b.account["equity"]),
                leverage_multiplier=after.leverage_multiplier,
                trace_id=trace_id,
            )
        )
        if after.emergency and not before.emergency:
            await self._flatten(b, f"SafetyGovernor emergency: {after.reason}", trace_id)

    async def _flatten(self, b: _Batch, reason: str, trace_id: str) -> None:
        """An emergency closes every open position at its latest mark, through the exit arbiter."""
        execution = self._execution
        for position in list(execution.open_rows()):
            if position["trade_id"] not in b.trades:
                continue  # not read with this batch: the monitor's next batch closes it (it is still halted)
            mark = execution.marks.get(position["symbol"])
            if mark is None:
                logger.error("emergency_close_without_mark", extra={"position_id": str(position["id"])})
                continue
            closed = await execution.close(
                b.execution, str(position["id"]), mark, b.now, amount=None, source=ExitSource.EMERGENCY, reason=reason
            )
            self._settle(b)
            for done in closed:
                await self._finish_trade(b, done, trace_id)

    # Queries ------------------------------------------------------------------------

    async def get_trade(self, trade_id: uuid.UUID) -> Trade:
        async with self._sessions() as session:
            trade = await TradingRepository(session).get_trade(trade_id)
        if trade is None or trade.account_id != self.account_id:
            raise NotFound(f"trade {trade_id} not found")
        return trade

    async def list_trades(
        self, status: str | None, symbol: str | None, limit: int, offset: int
    ) -> tuple[list[Trade], int]:
        async with self._sessions() as session:
            return await TradingRepository(session).list_trades(self.account_id, status, symbol, limit, offset)

    async def list_decisions(
        self, allowed: bool | None, limit: int, offset: int
    ) -> tuple[list[RiskDecisionRecord], int]:
        async with self._sessions() as session:
            return await TradingRepository(session).list_decisions(self.account_id, allowed, limit, offset)

    async def account(self) -> Account:
        async with self._sessions() as session:
            account = await TradingRepository(session).get_account(self.account_id)
        if account is None:
            raise ServiceUnavailable(f"account {self.account_id!r} is not initialised")
        return account

    async def marked_account(self) -> tuple[Account, Decimal]:
        """The account and the unrealized PnL of its open positions at the feed's prices now (a symbol
        the feed has no price for is valued at its last mark, else its entry)."""
        account = await self.account()
        for symbol in self._execution.symbols():
            try:
                await self._execution.refresh_mark(symbol)
            except NoPrice:
                logger.info("mark_unavailable", extra={"symbol": symbol})
        return account, self._execution.unrealized()

    async def recent_pnl(self, trades_back: int = 20) -> Decimal:
        async with self._sessions() as session:
            return await TradingRepository(session).recent_realized_pnl(self.account_id, trades_back)

    async def preview(self, intent: TradeIntent, trace_id: str) -> Preview:
        """RiskGuard's answer to `intent` now, and the largest notional the limit stack allows for it,
        without opening or storing anything (the account is read, not locked: a trade opened meanwhile
        can change the answer; POST /trades decides under the lock)."""
        state, account = await self.safety()
        now = self.clock()
        snapshot = self._policy.snapshot
        view = self._governor.view(state, now)
        account_state = AccountState(
            equity=account["equity"],
            open_positions=account["open_positions"],
            open_notional=account["open_notional"],
            used_margin=account["used_margin"],
            day_start_equity=state.day_start_equity,
        )
        decision = self._guard.check(
            intent,
            account_state,
            snapshot.profile,
            view,
            now=now,
            trace_id=trace_id,
            kill_switch=snapshot.state.kill_switch,
            blocked_symbols=snapshot.state.blocked_symbols,
        )
        limits = self._guard.limits(snapshot.profile, view)
        largest = (
            max_notional(
                limits,
                equity=account_state.equity,
                used_margin=account_state.used_margin,
                open_notional=account_state.open_notional,
                leverage=intent.leverage,
                stop_distance_pct=self._guard.stop_distance_pct(intent),
            )
            if account_state.equity > 0
            else NotionalLimit("NO_EQUITY", Decimal(0), "account")
        )
        return Preview(decision, largest, limits)

    async def safety(self) -> tuple[SafetyState, Row]:
        """The governor's state as of now (day rolled) and the account row."""
        async with self._sessions() as session:
            account, state = await TradingRepository(session).lock_account(self.account_id, for_update=False)
        if account is None or state is None:
            raise ServiceUnavailable(f"account {self.account_id!r} is not initialised")
        return self._governor.roll_day(state, account["equity"], self.clock()), account


def _as_row(record: Any) -> Row:
    return {c.name: getattr(record, c.name) for c in record.__table__.columns}
