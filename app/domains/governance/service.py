"""GovernanceService: feeds the exposure memory, re-evaluates the portfolio policy, publishes it.

Sources, and how nothing is counted twice or skipped:

- **Trades table / TradeClosed** (in-process): on start the newest `window` closed trades are read
  (oldest first), each keyed `trade:<id>`; a TradeClosed event reads its trade by id and records it
  under the same key, and a key already in the window is not recorded again. Events arriving before
  that read finished are queued and replayed after it.
- **Stream `quantum:stream:portfolio.memory`** (external producers; this service never writes to it,
  so the two sources are disjoint): on every (re)connection the group is created if missing
  (`XGROUP CREATE … $ MKSTREAM`), the newest `window` entries are read with `XREVRANGE`, then this
  consumer's pending entries (`XREADGROUP … 0`), then new ones (`>`), each batch acknowledged after it
  was recorded. Stream ids only grow, so one high-water mark (the newest id seen) decides: an entry
  at or below it was already counted (acked and skipped), one above it is recorded. A restart thus
  rebuilds the window from the stream and re-reads its unacknowledged entries without double counting.

One process decides (the leader of `Leadership`: with Redis, whoever holds the lease; without, this
one): it consumes the stream, reads the closed trades of every worker from the trades table before
each decision, stores and publishes. The others adopt the newest stored decision every second.

The policy in force is durable: every change is a row of `governance_decisions`, and on start the
newest row is the policy again before the first evaluation, so hysteresis continues from it and a
window that lost events cannot loosen it (`decide` keeps a stricter policy without evidence). A row
that could not be written is retried on the next evaluation.
"""

import asyncio
import json
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import Event
from app.core.db import database_failure
from app.core.lease import Leadership
from app.domains.governance import repository
from app.domains.governance.memory import ExposureMemory, MalformedEntry, parse_stream_entry
from app.domains.governance.models import GovernanceDecision
from app.domains.governance.policy import LIMITS, PolicyConfig, PolicyDecision, PortfolioPolicy, decide
from app.domains.risk.stack import Layer, LayerLimits

logger = logging.getLogger(__name__)

STREAM = "quantum:stream:portfolio.memory"
EVENTS_STREAM = "quantum:stream:governance.events"
KEY_POLICY = "quantum:governance:policy"
KEY_SCORE = "quantum:governance:score"
KEY_PARAMS = "quantum:governance:params"
KEY_PARAM = "quantum:governance:param:"
EVENTS_MAXLEN = 10_000


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class GovernanceConfig:
    window: int = 500
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    update_interval: float = 30.0
    redis_url: str | None = None  # None: in-process events only, nothing consumed or published
    group: str = "quantum-governance"
    consumer: str = field(default_factory=default_consumer)
    block_ms: int = 1000
    batch: int = 100
    redis_timeout: float = 0.5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    keep_changes: int = 20


@dataclass(frozen=True)
class PolicyChange:
    previous: str
    policy: str
    score: float | None
    reason: str
    at: datetime
    trigger: str


@dataclass(frozen=True)
class ActiveLimits:
    policy: str
    max_leverage: int
    min_confidence: float
    max_positions: int


@dataclass
class ConsumerState:
    enabled: bool
    stream: str = STREAM
    group: str = ""
    consumer: str = ""
    state: str = "disabled"  # disabled | starting | running | unreachable | stopped
    last_id: str | None = None
    recorded: int = 0
    duplicates_skipped: int = 0
    rejected: int = 0
    acked: int = 0
    retries: int = 0
    last_error: str | None = None
    published_at: datetime | None = None
    publish_error: str | None = None


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not response:
        return []
    if isinstance(response, dict):
        return list(next(iter(response.values()))[0] if response else [])
    return list(response[0][1])


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _json_safe(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as JSON (timestamps as ISO text; a non-finite float as null)."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, float) and not math.isfinite(value):
            out[key] = None
        else:
            out[key] = value
    return out


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class GovernanceService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        account_id: str,
        config: GovernanceConfig,
        clock: Callable[[], datetime],
        leadership: Leadership | None = None,
    ) -> None:
        self._sessions = sessions
        self.leadership = leadership or Leadership(None, "")
        self._trades_seen: datetime | None = None  # closed_at of the newest closed trade read
        self._adopted_at: datetime | None = None  # decided_at of the newest stored decision adopted
        self._account_id = account_id
        self.config = config
        self._clock = clock
        self.memory = ExposureMemory(config.window)
        self._policy = PortfolioPolicy.BALANCED
        self._decision: PolicyDecision | None = None
        self._decided_at: datetime | None = None
        self._changes: deque[PolicyChange] = deque(maxlen=config.keep_changes)
        self._unpublished: list[PolicyChange] = []
        self._unpersisted: list[tuple[PolicyChange, PolicyDecision]] = []
        self.restored: PolicyChange | None = None  # the stored decision the policy was restored from
        self.persist_error: str | None = None
        self._eval_lock = asyncio.Lock()
        self._rebuilt = False
        self._queued: list[str] = []  # TradeClosed trade ids that arrived before the rebuild
        self._high_water = (0, 0)
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._layers: dict[str, LayerLimits] = {}
        self._stopping = False
        self.consumer = ConsumerState(enabled=config.redis_url is not None)
        if config.redis_url is not None:
            self.consumer.group, self.consumer.consumer = config.group, config.consumer

    # --- state -------------------------------------------------------------------------------------
    @property
    def policy(self) -> PortfolioPolicy:
        return self._policy

    @property
    def decision(self) -> PolicyDecision | None:
        return self._decision

    @property
    def decided_at(self) -> datetime | None:
        return self._decided_at

    @property
    def rebuilt(self) -> bool:
        return self._rebuilt

    def changes(self) -> list[PolicyChange]:
        """Policy changes of this process, newest first."""
        return list(self._changes)

    def limit_layer(self) -> LayerLimits:
        """The active policy as a layer of RiskGuard's limit stack; the same object while the policy
        is unchanged, so RiskGuard rebuilds the stack only when it changes."""
        active = self.current_limits()
        layer = self._layers.get(active.policy)
        if layer is None:
            layer = self._layers[active.policy] = LayerLimits(
                Layer.GOVERNANCE,
                active.policy,
                max_leverage=Decimal(active.max_leverage),
                min_confidence=Decimal(str(active.min_confidence)),
                max_open_positions=active.max_positions,
            )
        return layer

    def current_limits(self) -> ActiveLimits:
        """The active policy's limits, for the limit stack."""
        limits = LIMITS[self._policy]
        return ActiveLimits(self._policy.value, limits.max_leverage, limits.min_confidence, limits.max_positions)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name="governance"))

    async def stop(self) -> None:
        """Cancel the tasks and wait for them; the loops also check `_stopping`, because a client
        library may turn a cancellation into a timeout error that a retry loop would swallow."""
        self._stopping = True
        tasks = list(self._tasks)
        while tasks:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self.consumer.enabled:
            self.consumer.state = "stopped"

    async def _run(self) -> None:
        try:
            await self._start_then_consume()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("governance_stopped_by_error")
            self.consumer.state = "stopped" if self.consumer.enabled else "disabled"

    async def _start_then_consume(self) -> None:
        await self._rebuild_from_trades()
        synced = False
        if self.config.redis_url is not None:
            self.consumer.state = "starting"
            synced = await self._try_sync()
        await self.evaluate("start")
        self._tasks.append(asyncio.create_task(self._timer(), name="governance-timer"))
        if self.config.redis_url is not None:
            await self._consume(synced)
        elif self.leadership.shared:  # no stream, several processes: followers still adopt every second
            while not self._stopping:
                await self._follow()
                await asyncio.sleep(1.0)

    async def _timer(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.update_interval)
            try:
                await self.evaluate("timer")
            except Exception:
                logger.exception("governance_evaluation_failed")

    # --- trades ------------------------------------------------------------------------------------
    async def _rebuild_from_trades(self) -> None:
        delay = self.config.backoff_initial
        while True:
            try:
                async with self._sessions() as session:
                    rows = await repository.newest_closed(session, self._account_id, self.config.window)
                    stored = await repository.recent_decisions(session, self._account_id, self.config.keep_changes)
                break
            except Exception as exc:
                if database_failure(exc) is None or self._stopping:
                    raise
                logger.error("governance_rebuild_waiting_for_database", extra={"error_class": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
        self._restore(stored)
        for key, event in rows:
            self.memory.record(key, event)
        if rows:
            self._trades_seen = rows[-1][1].timestamp
        self._rebuilt = True
        queued, self._queued = self._queued, []
        for trade_id in queued:
            await self._record_trade(trade_id)

    def _restore(self, stored: list[GovernanceDecision]) -> None:
        """The newest stored decision is the policy again; the rows are the last changes shown."""
        changes = [
            PolicyChange(r.previous or r.policy, r.policy, r.score, r.reason, r.decided_at, r.trigger)
            for r in stored
            if r.policy in PortfolioPolicy.__members__
        ]
        if not changes or self._decision is not None:
            return
        self._policy = PortfolioPolicy(changes[0].policy)
        self.restored = changes[0]
        self._adopted_at = changes[0].at
        self._changes.extend(changes)
        logger.info("governance_policy_restored", extra={"policy": self._policy.value})

    async def on_trade_closed(self, event: Event) -> None:
        trade_id: str = getattr(event, "trade_id")  # noqa: B009 (any Event kind may be subscribed)
        if not self._rebuilt:
            self._queued.append(trade_id)
            return
        await self._record_trade(trade_id)

    async def _record_trade(self, trade_id: str) -> None:
        key = f"trade:{trade_id}"
        if key in self.memory:
            return
        async with self._sessions() as session:
            event = await repository.closed_trade(session, trade_id)
        if event is not None:
            self.memory.record(key, event)

    # --- stream ------------------------------------------------------------------------------------
    def _client(self) -> Redis:
        if self._redis is None:
            assert self.config.redis_url is not None
            self._redis = Redis.from_url(
                self.config.redis_url,
                socket_timeout=self.config.block_ms / 1000 + self.config.redis_timeout,
                socket_connect_timeout=self.config.redis_timeout,
            )
        return self._redis

    async def _try_sync(self) -> bool:
        try:
            await self._sync()
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            return False
        return True

    def _unreachable(self, exc: BaseException) -> None:
        cause = f"{type(exc).__name__}: {exc}"[:300]
        if self.consumer.state != "unreachable" or self.consumer.last_error != cause:
            logger.error("governance_redis_unreachable", extra={"error": cause})
        self.consumer.state, self.consumer.last_error = "unreachable", cause

    async def _sync(self) -> None:
        """On (re)connection: the group, the newest window of the stream, our pending entries."""
        redis, group, consumer = self._client(), self.config.group, self.config.consumer
        try:
            await redis.xgroup_create(STREAM, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        newest: list[tuple[Any, Any]] = list(await redis.xrevrange(STREAM, count=self.config.window) or [])
        for entry_id, fields in reversed(newest):
            self._ingest(entry_id, fields)
        while True:
            response: Any = await redis.xreadgroup(group, consumer, {STREAM: "0"}, count=self.config.batch)
            entries = _entries(response)
            if not entries:
                break
            await self._handle(entries)
        self.consumer.state, self.consumer.last_error = "running", None

    async def _consume(self, synced: bool) -> None:
        delay = self.config.backoff_initial
        while not self._stopping:
            try:
                if not self.leadership.is_leader:
                    await self._follow()
                    synced = False
                    continue
                if not synced:
                    await self._sync()
                    synced = True
                delay = self.config.backoff_initial
                response: Any = await self._client().xreadgroup(
                    self.config.group,
                    self.config.consumer,
                    {STREAM: ">"},
                    count=self.config.batch,
                    block=self.config.block_ms,
                )
                entries = _entries(response)
                if entries:
                    await self._handle(entries)
            except (RedisError, OSError) as exc:
                if self._stopping or _cancelling():
                    raise asyncio.CancelledError from exc
                synced = False
                self._unreachable(exc)
                self.consumer.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
            except Exception as exc:  # a bug must not stop the consumer for good: logged, retried
                if self._stopping or _cancelling():
                    raise asyncio.CancelledError from exc
                synced = False
                logger.exception("governance_consumer_failed")
                self.consumer.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self.consumer.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)

    def _ingest(self, entry_id: bytes | str, fields: dict[Any, Any] | None) -> None:
        """Record one entry unless it was counted already; a malformed one is counted and logged."""
        position = _stream_id(entry_id)
        if position <= self._high_water:
            self.consumer.duplicates_skipped += 1
            return
        self._high_water = position
        self.consumer.last_id = f"{position[0]}-{position[1]}"
        try:
            event = parse_stream_entry(fields or {})
        except MalformedEntry as exc:
            self.memory.reject()
            self.consumer.rejected += 1
            logger.warning("governance_entry_rejected", extra={"entry_id": self.consumer.last_id, "error": str(exc)})
            return
        if self.memory.record(f"stream:{self.consumer.last_id}", event):
            self.consumer.recorded += 1

    async def _handle(self, entries: list[tuple[Any, Any]]) -> None:
        for entry_id, fields in entries:
            self._ingest(entry_id, fields)
        acked = await self._client().xack(STREAM, self.config.group, *[entry_id for entry_id, _ in entries])
        self.consumer.acked += int(acked)

    # --- policy ------------------------------------------------------------------------------------
    @property
    def role(self) -> str:
        return "leader" if self.leadership.is_leader else "follower"

    async def _follow(self) -> None:
        """As a follower: adopt the newest stored decision every second until this process leads."""
        while not self._stopping and not self.leadership.is_leader:
            try:
                await self._adopt_stored()
            except Exception as exc:
                if database_failure(exc) is None:
                    raise
            await asyncio.sleep(1.0)

    async def _adopt_stored(self) -> PolicyDecision | None:
        async with self._sessions() as session:
            row = await repository.latest_decision(session, self._account_id)
        if row is None or row.policy not in PortfolioPolicy.__members__:
            return self._decision
        newer = self._adopted_at is None or row.decided_at > self._adopted_at
        if newer or self._decision is None:  # on start the restored row is adopted as the decision
            if newer:
                self._changes.appendleft(
                    PolicyChange(
                        row.previous or row.policy, row.policy, row.score, row.reason, row.decided_at, row.trigger
                    )
                )
            self._adopted_at = row.decided_at
            self._policy = PortfolioPolicy(row.policy)
            reason = f"adopted from the leader: {row.reason}"
            self._decision = PolicyDecision(self._policy, row.score, reason, row.inputs)
            self._decided_at = row.decided_at
        return self._decision

    async def _catch_up_trades(self) -> None:
        """Record the closed trades of every process since the newest one read (the leader decides
        from all of them; its own TradeClosed events cover only its own closes)."""
        if self._trades_seen is None:
            return
        async with self._sessions() as session:
            rows = await repository.closed_since(session, self._account_id, self._trades_seen, self.config.window)
        for key, event, closed_at in rows:
            if key not in self.memory:
                self.memory.record(key, event)
            self._trades_seen = max(self._trades_seen, closed_at)

    async def evaluate(self, trigger: str = "request") -> PolicyDecision:
        """Decide the policy from the memory now, store a change and publish (Redis errors are logged,
        never raised). A process that does not lead adopts the leader's newest stored decision."""
        if not self.leadership.is_leader:
            adopted = await self._adopt_stored()
            if adopted is None:  # nothing stored yet: the policy stays as it is until the leader decides
                adopted = PolicyDecision(self._policy, None, "no stored decision yet: the leader decides", {})
                self._decision, self._decided_at = adopted, self._clock()
            return adopted
        async with self._eval_lock:
            if self._rebuilt:
                try:
                    await self._catch_up_trades()
                except Exception as exc:
                    if database_failure(exc) is None:
                        raise
            previous = self._policy
            decision = decide(previous, self.memory.summary(), self.config.policy)
            self._policy, self._decision, self._decided_at = decision.policy, decision, self._clock()
            if decision.policy is not previous:
                change = PolicyChange(
                    previous.value, decision.policy.value, decision.score, decision.reason, self._decided_at, trigger
                )
                self._changes.appendleft(change)
                self._unpublished.append(change)
                self._unpersisted.append((change, decision))
                logger.info(
                    "governance_policy_changed",
                    extra={"from": previous.value, "to": decision.policy.value, "reason": decision.reason},
                )
            if self._unpersisted:
                await self._persist()
            if self.config.redis_url is not None:
                await self._publish(decision)
            return decision

    async def _persist(self) -> None:
        """Store the changes not stored yet; a failure is logged and retried on the next evaluation
        (until then a restart restores the last stored policy)."""
        try:
            async with self._sessions() as session, session.begin():
                for change, decision in self._unpersisted:
                    session.add(
                        GovernanceDecision(
                            account_id=self._account_id,
                            decided_at=change.at,
                            previous=change.previous,
                            policy=change.policy,
                            score=change.score,
                            reason=change.reason,
                            trigger=change.trigger,
                            inputs=_json_safe(decision.inputs),
                        )
                    )
        except Exception as exc:
            if database_failure(exc) is None:
                raise
            error = f"{type(exc).__name__}"
            if self.persist_error != error:
                logger.error("governance_persist_failed", extra={"error_class": database_failure(exc)})
            self.persist_error = error
            return
        newest = max(change.at for change, _ in self._unpersisted)
        self._adopted_at = newest if self._adopted_at is None else max(self._adopted_at, newest)
        self._unpersisted.clear()
        self.persist_error = None

    async def _publish(self, decision: PolicyDecision) -> None:
        limits = asdict(decision.limits)
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.set(KEY_POLICY, decision.policy.value)
                if decision.score is None:
                    pipe.delete(KEY_SCORE)
                else:
                    pipe.set(KEY_SCORE, repr(decision.score))
                pipe.set(KEY_PARAMS, json.dumps({"policy": decision.policy.value, **limits}))
                for name, value in limits.items():
                    pipe.set(KEY_PARAM + name, str(value))
                for change in self._unpublished:
                    pipe.xadd(
                        EVENTS_STREAM,
                        {
                            "from": change.previous,
                            "to": change.policy,
                            "score": "" if change.score is None else repr(change.score),
                            "reason": change.reason,
                            "time": change.at.isoformat(),
                            "trigger": change.trigger,
                        },
                        maxlen=EVENTS_MAXLEN,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            if self.consumer.publish_error != error:
                logger.error("governance_publish_failed", extra={"error": error})
            self.consumer.publish_error = error
            return
        self._unpublished.clear()
        self.consumer.published_at, self.consumer.publish_error = self._clock(), None
