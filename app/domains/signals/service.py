"""Signals for the API: the champion ensemble's vote, or the momentum fallback, never silently.

The champion ensemble (a self-contained artifact) is loaded at start and reloaded when a
`ModelPromoted` event says an ensemble was promoted. Without a champion, the fallback rule
answers with `source: fallback_momentum` (counted in a metric and shown in /ready), or, if
fallback is disabled, nothing does and the caller gets 503.

Signals are offered only for symbols that have market data and that POST /trades can open (the market
catalog), the same set the universe ranks (`universe.offered_symbols`); sizes are the exchange's
(`sizing.fit_to_market`).
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from app.core.bus import Event
from app.core.errors import InvalidRequest, NotFound, ServiceUnavailable
from app.core.metrics import FALLBACK_SIGNALS, SIGNALS
from app.domains.markets.catalog import MarketCatalog
from app.domains.risk.stack import EffectiveLimits
from app.domains.signals.artifacts import load_ensemble
from app.domains.signals.candles import Candles, FloatArray, Funding
from app.domains.signals.decision import decide
from app.domains.signals.fallback import SOURCE as FALLBACK_SOURCE
from app.domains.signals.fallback import NotEnoughHistory, momentum_signal
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.labels import CLASSES
from app.domains.signals.marketdata import MarketData, MarketDataError, UnknownMarketData
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.service import ModelRegistry
from app.domains.signals.sizing import (
    SizeDecision,
    SizingConfig,
    SizingInputs,
    SizingPolicy,
    fit_to_market,
    size_position,
)
from app.domains.signals.training import TrainedModels, latest_inputs
from app.domains.signals.universe import NOT_TRADABLE, Exclusion, offered_symbols, symbols_with_data

logger = logging.getLogger(__name__)
HOUR_MS = 3_600_000
ENSEMBLE_SOURCE = "ensemble"


@dataclass(frozen=True)
class ModelVote:
    kind: str
    version_id: str | None
    side: str
    probabilities: dict[str, float]
    weight: float


@dataclass(frozen=True)
class Signal:
    symbol: str
    side: str
    confidence: float
    source: str
    regime: str | None
    strategy: str | None
    votes: list[ModelVote]
    as_of: datetime
    model_version_id: str | None
    price: float  # close of the last candle
    volatility: float | None  # 24 h realized volatility of 1 h log returns (for sizing)
    detail: str | None = None


@dataclass
class Champion:
    version: ModelVersion
    trained: TrainedModels
    member_ids: dict[str, str]


@dataclass
class SignalStats:
    signals: int = 0
    fallback_signals: int = 0
    last_fallback_at: datetime | None = None
    last_error: str | None = None
    load_seconds: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


def resolve_symbol(symbol: str, offered: list[str], excluded: list[Exclusion]) -> str:
    """Binance id (BTCUSDT) or ccxt unified (BTC/USDT:USDT) to the unified form of an offered symbol.

    A known symbol that is not offered is refused with its reason: 422 when it has data but no exchange
    metadata (POST /trades refuses it with 422 too), 404 when it is tradable but has no market data, as
    for a symbol nobody knows.
    """
    reasons = {e.symbol: e.reason for e in excluded}
    text = symbol.strip()
    upper = text.upper()
    found = next(
        (s for s in [*offered, *reasons] if text == s or upper == "".join(s.split(":")[0].split("/"))),
        None,
    )
    listed = ", ".join(offered)
    if found is None:
        raise NotFound(f"unknown symbol {symbol!r}; signals exist for {listed}")
    reason = reasons.get(found)
    if reason is None:
        return found
    detail = f"{found}: {reason}; signals exist for {listed}"
    if reason == NOT_TRADABLE:
        raise InvalidRequest(detail, symbol=found, reason=reason)
    raise NotFound(detail, symbol=found, reason=reason)


class SignalService:
    def __init__(
        self,
        market: MarketData,
        registry: ModelRegistry,
        *,
        allow_fallback: bool,
        timeframe: str = "1h",
        history_candles: int = 720,
        sizing_dir: Path | None = None,
        markets: MarketCatalog | None = None,
    ) -> None:
        self.sizing_dir = sizing_dir
        self.market = market
        # What POST /trades can open: signals are offered and sized for these only (bootstrap passes its own).
        self.markets = markets if markets is not None else MarketCatalog.load()
        self.registry = registry
        self.allow_fallback = allow_fallback
        self.timeframe = timeframe
        self.history_candles = history_candles
        self.champion: Champion | None = None
        self.stats = SignalStats()
        self.sizing_policy: SizingPolicy | None = None
        self.sizing_config = SizingConfig()

    async def load_champion(self) -> Champion | None:
        """Load the registry's champion ensemble (None if there is none)."""
        version = await self.registry.champion("ensemble")
        if version is None:
            self.champion = None
            return None
        began = time.perf_counter()
        trained, metadata = await asyncio.to_thread(load_ensemble, Path(version.artifact_path))
        self.champion = Champion(version, trained, {k: str(v) for k, v in metadata.get("members", {}).items()})
        self.stats.load_seconds = time.perf_counter() - began
        logger.info("signal_champion_loaded", extra={"version_id": str(version.id)})
        return self.champion

    async def load_sizing_policy(self) -> SizingPolicy | None:
        """A trained sizing policy if one was saved (`python -m app train-sizing`), else Kelly sizes."""
        directory = self.sizing_dir
        if directory is None or not await asyncio.to_thread((directory / "config.json").exists):
            self.sizing_policy = None
            return None
        self.sizing_policy = await asyncio.to_thread(SizingPolicy.load, directory)
        logger.info("sizing_policy_loaded", extra={"directory": str(directory)})
        return self.sizing_policy

    def size(
        self,
        signal: Signal,
        *,
        equity: Decimal,
        used_margin: Decimal,
        open_notional: Decimal,
        pnl_trend: float,
        limits: EffectiveLimits,
        leverage: Decimal | None,
        stop_distance_pct: Decimal | None,
        assumed_stop_pct: Decimal,
    ) -> SizeDecision:
        """A position size for `signal` on the live account: at most the largest notional the limit stack
        allows (the same function RiskGuard checks with), then fitted to the market's amount step and
        minimums, so POST /trades at the signal's price takes it."""
        if signal.side == "HOLD":
            return SizeDecision(None, None, None, "none", "HOLD: no position to size")
        inputs = SizingInputs(
            confidence=signal.confidence,
            volatility=signal.volatility if signal.volatility is not None else float("nan"),
            pnl_trend=pnl_trend,
            margin_use=float(used_margin / equity) if equity > 0 else 0.0,
        )
        price = Decimal(repr(signal.price))
        clipped = size_position(
            equity,
            price,
            inputs,
            limits,
            self.sizing_policy,
            self.sizing_config,
            leverage,
            stop_distance_pct,
            open_notional=open_notional,
            used_margin=used_margin,
            assumed_stop_pct=assumed_stop_pct,
        )
        return fit_to_market(clipped, self.markets.resolve(signal.symbol), price)

    async def on_model_promoted(self, event: Event) -> None:
        if isinstance(event, ModelPromoted) and event.kind == "ensemble" and event.promoted:
            await self.load_champion()

    async def signal(self, symbol: str, as_of_ms: int | None = None) -> Signal:
        return (await self.signals([symbol], as_of_ms))[0]

    async def signals(self, symbols: list[str], as_of_ms: int | None = None) -> list[Signal]:
        """Signals for several offered symbols (see `resolve_symbol`); the models score them in one batch."""
        offered, excluded = offered_symbols(symbols_with_data(self.market), self.markets)
        resolved = [resolve_symbol(s, offered, excluded) for s in symbols]
        history = [await self._history(symbol, as_of_ms) for symbol in resolved]
        champion = self.champion
        if champion is None:
            return [self._fallback(c, "no champion model is registered") for c in history]
        return self._vote(champion, history)

    async def _history(self, symbol: str, as_of_ms: int | None) -> tuple[Candles, Funding]:
        end = None if as_of_ms is None else as_of_ms + 1
        start = None if as_of_ms is None else as_of_ms - self.history_candles * HOUR_MS
        try:
            candles = await self.market.candles(symbol, self.timeframe, start, end)
            funding = await self.market.funding(symbol, start, end)
        except UnknownMarketData as exc:
            raise NotFound(str(exc)) from exc
        except MarketDataError as exc:
            raise ServiceUnavailable(f"market data unavailable: {exc}") from exc
        if len(candles) == 0:
            raise NotFound(f"no candles for {symbol} up to the requested time")
        return candles.slice(max(0, len(candles) - self.history_candles), len(candles)), funding

    def _fallback(self, history: tuple[Candles, Funding], why: str) -> Signal:
        candles = history[0]
        if not self.allow_fallback:
            raise ServiceUnavailable(f"{why}, and the momentum fallback is disabled (SIGNAL_FALLBACK_ENABLED)")
        try:
            rule = momentum_signal(candles)
        except NotEnoughHistory as exc:
            raise ServiceUnavailable(f"{why}; fallback: {exc}") from exc
        self.stats.fallback_signals += 1
        self.stats.last_fallback_at = datetime.now(UTC)
        FALLBACK_SIGNALS.inc()
        SIGNALS.labels(source=FALLBACK_SOURCE).inc()
        logger.warning("signal_from_fallback", extra={"symbol": candles.symbol, "reason": why})
        rvol = compute_features(candles).column("rvol_24")[-1]
        return Signal(
            symbol=candles.symbol,
            side=rule.side,
            confidence=rule.confidence,
            source=FALLBACK_SOURCE,
            regime=None,
            strategy=None,
            votes=[],
            as_of=datetime.fromtimestamp(rule.as_of_ms / 1000, tz=UTC),
            model_version_id=None,
            price=float(candles.close[-1]),
            volatility=float(rvol) if np.isfinite(rvol) else None,
            detail=f"{why}; 24h change {rule.change_24h_pct:+.2f} %",
        )

    def _vote(self, champion: Champion, history: list[tuple[Candles, Funding]]) -> list[Signal]:
        trained = champion.trained
        inputs = [latest_inputs(c, f, trained.config) for c, f in history]
        ready = [i for i, item in enumerate(inputs) if item.ready]
        out: list[Signal | None] = [None] * len(history)
        for i, item in enumerate(inputs):
            if not item.ready:
                out[i] = self._fallback(history[i], "not enough history for the models' features")
        if ready:
            x = np.vstack([inputs[i].x for i in ready])
            windows = np.vstack([inputs[i].window for i in ready])
            per_model = trained.probabilities(x, windows)
            combined = trained.ensemble.combine(per_model)
            for row, i in enumerate(ready):
                out[i] = self._signal(champion, history[i][0], inputs[i].features, per_model, combined, row)
        return [s for s in out if s is not None]

    def _signal(
        self,
        champion: Champion,
        candles: Candles,
        features: FeatureMatrix,
        per_model: dict[str, FloatArray],
        combined: FloatArray,
        row: int,
    ) -> Signal:
        last = len(candles) - 1
        decision = decide(combined[row], features, last)
        side, confidence, regime, strategy = decision.side, decision.confidence, decision.regime, decision.strategy
        weights = champion.trained.ensemble.weights
        votes = [
            ModelVote(
                kind=kind,
                version_id=champion.member_ids.get(kind),
                side=CLASSES[int(p[row].argmax())],
                probabilities={c: float(v) for c, v in zip(CLASSES, p[row], strict=True)},
                weight=float(weights.get(kind, 0.0)),
            )
            for kind, p in per_model.items()
        ]
        self.stats.signals += 1
        SIGNALS.labels(source=ENSEMBLE_SOURCE).inc()
        return Signal(
            symbol=candles.symbol,
            side=side,
            confidence=confidence,
            source=ENSEMBLE_SOURCE,
            regime=regime.value,
            strategy=strategy.value,
            votes=votes,
            as_of=datetime.fromtimestamp(int(candles.timestamp[-1]) / 1000, tz=UTC),
            model_version_id=str(champion.version.id),
            price=float(candles.close[-1]),
            volatility=float(features.column("rvol_24")[last]),
        )
