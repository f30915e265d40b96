"""Composition root: builds every component from settings; tests pass their own adapters."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.bus import EventBus, HandlerTable
from app.core.clock import utcnow
from app.core.db import create_engine, create_sessionmaker, database_failure
from app.core.lease import Leadership
from app.core.settings import Settings
from app.domains.execution.binance import BinanceUsdmExchange
from app.domains.execution.feed import LivePriceFeed, PriceFeed, ReplayPriceFeed
from app.domains.execution.monitor import PositionMonitor
from app.domains.execution.service import ExecutionConfig, PaperExecution
from app.domains.governance.policy import PolicyConfig
from app.domains.governance.service import GovernanceConfig, GovernanceService
from app.domains.learning.clm import ClmConfig, ContinuousLearning
from app.domains.markets.catalog import MarketCatalog
from app.domains.markets.marketdata import CcxtMarketData, MarketData, ReplayMarketData
from app.domains.modes.inputs import InputSources
from app.domains.modes.rules import ModeConfig
from app.domains.modes.service import ModesConfig, OperatingModes
from app.domains.policy.backends import (
    InProcessPolicyBackend,
    PolicyBackend,
    RedisPolicyBackend,
)
from app.domains.policy.durable import DurablePolicyState
from app.domains.policy.profiles import RiskMode
from app.domains.policy.service import PolicyService
from app.domains.policy.store import PolicyStore
from app.domains.risk.guard import RiskGuard, RiskGuardConfig
from app.domains.riskbrain.metrics import RiskBrainConfig
from app.domains.riskbrain.service import RiskBrain
from app.domains.safety.governor import GovernorConfig, SafetyGovernor
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.service import ModelRegistry
from app.domains.signals.service import SignalService
from app.domains.sizing.service import PositionSizer
from app.domains.trading.events import TradeClosed
from app.domains.trading.service import TradingService
from app.handlers import default_handlers
from app.readiness import readiness

logger = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: EventBus
    policy_store: PolicyStore
    policy: PolicyService
    guard: RiskGuard
    governor: SafetyGovernor
    markets: MarketCatalog
    trading: TradingService
    market_data: MarketData
    registry: ModelRegistry
    signals: SignalService
    sizing: PositionSizer
    clm: ContinuousLearning
    riskbrain: RiskBrain
    governance: GovernanceService
    modes: OperatingModes
    leadership: Leadership
    monitor: PositionMonitor
    live_exchange: BinanceUsdmExchange | None = None
    _deferred: "asyncio.Task[None] | None" = None

    async def start(self) -> None:
        """Start serving. A database that cannot be reached yet does not stop the process: it
        answers 503 (and `/ready` says not_ready) until the account and the champion are loaded."""
        await self.policy_store.start()
        if not await self._load_from_database():
            self._deferred = asyncio.create_task(self._load_until_done(), name="deferred-startup")
        await self.sizing.load_policy()
        self.monitor.start()
        await self.clm.start()
        await self.leadership.start()
        self.riskbrain.start()
        self.governance.start()
        if self.settings.modes_enabled:
            await self.modes.start()

    async def _load_from_database(self) -> bool:
        try:
            await self.trading.ensure_account()
            await self.signals.load_champion()
        except Exception as exc:
            kind = database_failure(exc)
            if kind is None:
                raise
            if self._deferred is None:  # once, not on every retry
                logger.error("startup_waiting_for_database", extra={"error_class": kind})
            return False
        return True

    async def _load_until_done(self) -> None:
        while True:
            await asyncio.sleep(self.settings.policy_poll_interval_seconds)
            if await self._load_from_database():
                break
        logger.info("startup_completed_after_database_returned")

    async def stop(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            await asyncio.gather(self._deferred, return_exceptions=True)
        await self.monitor.stop()
        await self.clm.stop()
        await self.modes.stop()
        await self.riskbrain.stop()
        await self.governance.stop()
        await self.leadership.stop()
        await self.trading.close()
        await self.signals.close()  # its inference thread
        if self.live_exchange is not None:
            await self.live_exchange.close()
        await self.bus.drain()
        await self.policy_store.stop()
        await self.engine.dispose()


def governance_settings(settings: Settings) -> GovernanceConfig:
    """The governance config from settings: streams only with a Redis URL and GOVERNANCE_STREAMS_ENABLED."""
    return GovernanceConfig(
        window=settings.governance_window,
        policy=PolicyConfig(
            min_samples=settings.min_samples,
            conservative_threshold=settings.conservative_threshold,
            aggressive_threshold=settings.aggressive_threshold,
            hysteresis=settings.governance_hysteresis,
        ),
        update_interval=settings.policy_update_interval,
        redis_url=settings.redis_url if settings.governance_streams_enabled else None,
        redis_timeout=settings.redis_timeout_seconds,
    )


def riskbrain_settings(settings: Settings) -> RiskBrainConfig:
    return RiskBrainConfig(
        min_samples=settings.riskbrain_min_samples,
        window=settings.riskbrain_window,
        mc_paths=settings.riskbrain_mc_paths,
        interval_seconds=settings.riskbrain_interval_seconds,
    )


def modes_settings(settings: Settings) -> ModesConfig:
    return ModesConfig(
        rules=ModeConfig(
            emergency_drawdown_pct=settings.mode_emergency_drawdown_pct,
            preservation_drawdown_pct=settings.mode_preservation_drawdown_pct,
            expansion_drawdown_pct=settings.mode_expansion_drawdown_pct,
            preservation_win_rate=settings.mode_preservation_win_rate,
            expansion_win_rate=settings.mode_expansion_win_rate,
            min_trades=settings.mode_min_trades,
            min_dwell_seconds=settings.mode_min_dwell_seconds,
        ),
        interval_seconds=settings.mode_update_interval,
    )


def bootstrap(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    policy_backend: PolicyBackend | None = None,
    markets: MarketCatalog | None = None,
    handlers: HandlerTable | None = None,
    market_data: MarketData | None = None,
    clm_config: ClmConfig | None = None,
    clock: Callable[[], datetime] = utcnow,
    riskbrain_config: RiskBrainConfig | None = None,
    governance_config: GovernanceConfig | None = None,
    modes_config: ModesConfig | None = None,
    price_feed: PriceFeed | None = None,
    live_exchange: BinanceUsdmExchange | None = None,
) -> Container:
    """`live_exchange`: the Binance adapter to use with EXCHANGE=binance (tests pass one on a fake
    transport); built from the settings when None."""
    engine = engine or create_engine(settings.database_url, settings.db_pool_size, **settings.db_engine_options())
    sessions = create_sessionmaker(engine)
    bus = EventBus(handlers if handlers is not None else default_handlers())
    if policy_backend is None:
        policy_backend = (
            RedisPolicyBackend(
                settings.redis_url,
                settings.redis_prefix,
                settings.redis_timeout_seconds,
            )
            if settings.redis_url
            else InProcessPolicyBackend()
        )
    store = PolicyStore(
        policy_backend,
        DurablePolicyState(sessions, clock),
        RiskMode(settings.quantum_risk_mode),
        settings.policy_poll_interval_seconds,
    )
    guard = RiskGuard(
        RiskGuardConfig(
            max_price_age_seconds=settings.max_price_age_seconds,
            max_price_future_skew_seconds=settings.max_price_future_skew_seconds,
            assumed_stop_distance_pct=settings.assumed_stop_distance_pct,
            liquidation_buffer_pct=settings.liquidation_buffer_pct,
            max_price_deviation_pct=settings.max_price_deviation_pct,
            max_signal_age_seconds=settings.signal_max_age_seconds,
            accept_fallback_signals=settings.accept_fallback_signals,
        )
    )
    governor = SafetyGovernor(
        GovernorConfig(
            losing_streak_threshold=settings.losing_streak_threshold,
            streak_leverage_multiplier=settings.losing_streak_leverage_multiplier,
            recovery_wins=settings.recovery_wins,
        )
    )
    markets = markets or MarketCatalog.load(settings.markets_file)
    live = None
    if settings.exchange == "binance":
        live = live_exchange or BinanceUsdmExchange(
            api_key=settings.binance_api_key.get_secret_value(),
            secret=settings.binance_secret.get_secret_value(),
            testnet=settings.binance_testnet,
        )
        # Live: candles, funding and marks from the same exchange (one client, one rate limiter).
        market_data = market_data or CcxtMarketData(live.client)
        price_feed = price_feed or LivePriceFeed(live, market_data, clock)
    market_data = market_data or ReplayMarketData(
        Path(settings.market_data_dir) if settings.market_data_dir else None, cache_size=64
    )
    feed = price_feed or ReplayPriceFeed(market_data, settings.price_feed_start, settings.price_feed_speed)
    execution = PaperExecution(
        feed,
        markets,
        ExecutionConfig(
            slippage_pct=settings.paper_slippage_pct,
            taker_fee=settings.taker_fee_rate,
            atr_bars=settings.exit_atr_bars,
        ),
        settings.account_id,
        clock,
        live,
    )
    policy_of: list[Callable[[], str | None]] = []  # the governance policy, built below
    trading = TradingService(
        sessions,
        store,
        guard,
        governor,
        markets,
        bus,
        account_id=settings.account_id,
        starting_balance=settings.paper_starting_balance,
        fee_rate=settings.taker_fee_rate,
        execution=execution,
        clock=clock,
        # Live: one command per transaction, so a failed write never undoes another command's orders.
        max_batch=1 if live is not None else settings.sequencer_max_batch,
        exit_policy=lambda: policy_of[0]() if policy_of else None,
    )
    registry = ModelRegistry(
        sessions, bus, Path(settings.model_dir).resolve(), keep_candidates=settings.model_keep_candidates
    )
    signals = SignalService(
        market_data,
        registry,
        allow_fallback=settings.signal_fallback_enabled,
        markets=markets,
    )
    bus.subscribe(ModelPromoted, signals.on_model_promoted)
    clm_config = clm_config or ClmConfig(
        symbols=tuple(s.strip() for s in settings.clm_symbols.split(",") if s.strip()),
        interval_seconds=settings.clm_interval_seconds,
        min_new_samples=settings.clm_min_new_samples,
        enabled=settings.clm_enabled,
    )
    clm = ContinuousLearning(settings, clm_config, market_data, clock=clock, registry=registry, bus=bus)
    riskbrain = RiskBrain(
        sessions, settings.account_id, riskbrain_config or riskbrain_settings(settings), clock, market_data
    )
    bus.subscribe(TradeClosed, riskbrain.on_trade_closed)
    leadership = Leadership(
        settings.redis_url,
        f"{settings.redis_prefix}:leader:{settings.account_id}",
        timeout=settings.redis_timeout_seconds,
    )
    governance = GovernanceService(
        sessions, settings.account_id, governance_config or governance_settings(settings), clock, leadership
    )
    bus.subscribe(TradeClosed, governance.on_trade_closed)
    policy_of.append(lambda: governance.policy.value)
    if settings.governance_limits_enabled:
        guard.add_layer(governance.limit_layer)
    built: list[Container] = []  # readiness reads the whole container, which is built below

    async def components() -> dict[str, Any]:
        return (await readiness(built[0]))[2]

    inputs = InputSources(
        riskbrain, governance, trading, bus, components, timeout=settings.db_connect_timeout_seconds + 1
    )
    modes = OperatingModes(
        sessions, settings.account_id, modes_config or modes_settings(settings), clock, inputs, leadership
    )
    bus.subscribe(TradeClosed, modes.on_trade_closed)
    if settings.modes_enabled:
        guard.add_layer(modes.limit_layer)
    container = Container(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=bus,
        policy_store=store,
        policy=PolicyService(store, sessions, bus, clock),
        guard=guard,
        governor=governor,
        markets=markets,
        trading=trading,
        market_data=market_data,
        registry=registry,
        signals=signals,
        sizing=PositionSizer(markets, Path(settings.model_dir).resolve() / "sizing"),
        clm=clm,
        riskbrain=riskbrain,
        governance=governance,
        modes=modes,
        leadership=leadership,
        monitor=PositionMonitor(
            execution.symbols, trading.apply_bars, settings.monitor_interval_seconds, trading.housekeeping
        ),
        live_exchange=live,
    )
    built.append(container)
    return container
