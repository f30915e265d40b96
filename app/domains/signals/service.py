"""Signals for the API: the champion ensemble's vote, or the momentum fallback, never silently.

The champion ensemble (a self-contained artifact) is loaded at start and reloaded when a
`ModelPromoted` event says an ensemble was promoted. Without a champion, the fallback rule
answers with `source: fallback_momentum` (counted in a metric and shown in /ready), or, if
fallback is disabled, nothing does and the caller gets 503.

Signals are offered only for symbols that have market data and that POST /trades can open (the market
catalog), the same set the universe ranks (`universe.offered_symbols`); sizes are the exchange's
(`sizing.fit_to_market`).

A signal as of t uses only what was known at t: candles closed by t (open time + timeframe <= t) and
funding settled by t. Its `as_of` is the close time of the newest candle used, `age_seconds` is how long
before t that was, and `stale` says the age is above `max_age_seconds`. Without a time, t is now on the
service's clock (the HTTP route passes the price feed's clock: simulated time for the bundled replay, the
clock POST /trades fills on).

Inference (features, the models, the ensemble) runs on one worker thread owned by the service, at a lower
OS priority than the event loop's, never on the loop; requests that arrive while it is busy are scored
together in its next turn. Members with zero ensemble weight are not run (their votes say so), and the
champion's models are traced and warmed on that thread when it is loaded, not on the first request.

What `confidence` means (`confidence_kind`), the two layers side by side:
- `p_tp_before_sl`: a LONG or SHORT call of a champion whose artifact has the meta layer: the meta model's
  calibrated P(the served trade's TP1 is hit before its stop within the max hold), for that side, from the
  features and the ensemble's probabilities at t (`meta.MetaModel`; the barriers it refers to are in
  `confidence_detail`). RiskGuard's minimum confidence then compares against this probability.
- `direction_probability`: the ensemble's probability of its call. For every HOLD (no trade, so no trade
  outcome to give a probability of), and for a LONG/SHORT call of a champion without a meta layer, which
  `confidence_detail` then says.
- `rule_confidence`: the momentum fallback's own confidence (no model, no probability).
`direction_confidence` is always the ensemble's probability of its call (null for the fallback).
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from app.core.bus import Event
from app.core.clock import utcnow
from app.core.errors import InvalidRequest, NotFound, ServiceUnavailable
from app.core.metrics import FALLBACK_SIGNALS, SIGNALS
from app.core.symbols import find_symbol
from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray, Funding
from app.domains.markets.catalog import MarketCatalog
from app.domains.markets.marketdata import MarketData, MarketDataError, UnknownMarketData
from app.domains.markets.universe import NOT_TRADABLE, Exclusion, offered_symbols, symbols_with_data
from app.domains.signals.artifacts import MetaLayer, load_ensemble, load_meta
from app.domains.signals.decision import decide
from app.domains.signals.ensemble import forecast_to_probabilities
from app.domains.signals.fallback import SOURCE as FALLBACK_SOURCE
from app.domains.signals.fallback import NotEnoughHistory, momentum_signal
from app.domains.signals.features import FEATURES, FeatureMatrix, compute_features
from app.domains.signals.labels import CLASSES
from app.domains.signals.meta import MetaModel, sides_from_probabilities
from app.domains.signals.modelset import TrainedModels, latest_inputs
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.service import ModelRegistry

logger = logging.getLogger(__name__)
ENSEMBLE_SOURCE = "ensemble"
DEFAULT_MAX_AGE_SECONDS = 7200.0  # two 1 h candles: stale once a whole candle that should have closed is missing
NOT_RUN = "zero ensemble weight: not run"
WARM_UP_CALLS = 3  # torch's JIT profiles the first calls of a frozen module before it optimises it
# How much lower than the event loop's the inference thread's OS priority is (Linux nice, per thread): when
# both are runnable and the cores are busy, the scheduler runs the event loop first, so a burst of signal
# requests does not delay /health, the policy read or any other request waiting on the loop.
INFERENCE_NICE = 10
T = TypeVar("T")
P_TP_BEFORE_SL = "p_tp_before_sl"
DIRECTION_PROBABILITY = "direction_probability"
RULE_CONFIDENCE = "rule_confidence"
HOLD_CONFIDENCE = "HOLD: no trade proposed, so no P(TP1 before the stop); confidence is the direction probability"


def _setup_inference_thread() -> None:
    """Run in the inference thread as it starts: one torch intra-op thread for it (OpenMP's setting is per
    thread; a single window gains nothing from a thread team and loses to its synchronisation on busy cores),
    and a lower OS priority than the event loop's thread."""
    torch.set_num_threads(1)
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + INFERENCE_NICE))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: same priority as the loop
        logger.info("signal_inference_priority_unchanged", extra={"error": str(exc)[:200]})


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class ModelVote:
    """One member's call; a member with zero ensemble weight is listed but not run (`ran: False`)."""

    kind: str
    version_id: str | None
    side: str | None
    probabilities: dict[str, float] | None
    weight: float
    ran: bool = True
    note: str | None = None


@dataclass(frozen=True)
class Signal:
    symbol: str
    side: str
    confidence: float
    source: str
    regime: str | None
    strategy: str | None
    votes: list[ModelVote]
    as_of: datetime  # close time of the newest candle used
    model_version_id: str | None
    price: float  # close of the last candle
    volatility: float | None  # 24 h realized volatility of 1 h log returns (for sizing)
    detail: str | None = None
    stale: bool = False  # the newest candle closed more than the service's max age before the time asked for
    age_seconds: float = 0.0  # from that close to the time asked for
    direction_confidence: float | None = None  # the ensemble's probability of its call (None: the fallback)
    confidence_kind: str = DIRECTION_PROBABILITY  # what `confidence` is (the module docstring)
    confidence_detail: str | None = None


@dataclass(frozen=True)
class History:
    """What was known at `at_ms` (the time a signal is asked for): candles closed and funding settled by then."""

    candles: Candles
    funding: Funding
    at_ms: int


@dataclass(frozen=True)
class Request:
    """One call's work for the inference thread: its histories, the champion when it was made, the max age."""

    champion: "Champion | None"
    history: list[History]
    max_age_seconds: float


@dataclass
class Champion:
    version: ModelVersion
    trained: TrainedModels
    member_ids: dict[str, str]
    meta: MetaModel | None = None  # the meta layer: P(TP1 before the stop) for the proposed side
    meta_absent: str = "no meta layer loaded"  # why `meta` is None
    member_notes: dict[str, str] = field(default_factory=dict)  # what a member's version id does not say


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
    found = find_symbol(symbol, [*offered, *reasons])
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
        markets: MarketCatalog | None = None,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.market = market
        # What POST /trades can open: signals are offered and sized for these only (bootstrap passes its own).
        self.markets = markets if markets is not None else MarketCatalog.load()
        self.registry = registry
        self.allow_fallback = allow_fallback
        self.timeframe = timeframe
        self.timeframe_ms = TIMEFRAME_MS[timeframe]
        self.history_candles = history_candles
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.champion: Champion | None = None
        self.stats = SignalStats()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[tuple[Request, asyncio.Future[list[Signal]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    # The inference thread -------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # One worker: the models are called from one thread at a time (no reliance on the libraries'
            # thread safety), and a burst of requests queues here instead of on the event loop.
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="signal-inference", initializer=_setup_inference_thread
            )
        return self._executor

    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), partial(call, *args))

    async def close(self) -> None:
        """Stop the inference thread (work already queued finishes; a later call starts a new one)."""
        drainer = self._drainer
        if drainer is not None and not drainer.done() and drainer.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(drainer, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    # Loading --------------------------------------------------------------------------------

    async def load_champion(self) -> Champion | None:
        """Load the registry's champion ensemble (None if there is none), its models warmed for serving."""
        version = await self.registry.champion("ensemble")
        if version is None:
            self.champion = None
            return None
        began = time.perf_counter()
        trained, metadata, layer = await self._off_loop(_load_and_warm, Path(version.artifact_path))
        members = {k: str(v) for k, v in metadata.get("members", {}).items()}
        notes = {
            k: f"weights refitted on all data inside this ensemble (refit of {metadata.get('refit_of')}); version "
            f"{members.get(k)} is the tested fit they replace"
            for k in metadata.get("refitted_inside", [])
        }
        self.champion = Champion(version, trained, members, layer.model, layer.absent or "", notes)
        if layer.model is None:
            logger.warning("signal_champion_without_meta_layer", extra={"reason": layer.absent})
        self.stats.load_seconds = time.perf_counter() - began
        logger.info("signal_champion_loaded", extra={"version_id": str(version.id)})
        return self.champion

    async def on_model_promoted(self, event: Event) -> None:
        if isinstance(event, ModelPromoted) and event.kind == "ensemble" and event.promoted:
            await self.load_champion()

    # Serving --------------------------------------------------------------------------------

    async def signal(
        self,
        symbol: str,
        as_of_ms: int | None = None,
        *,
        now: datetime | None = None,
        max_age_seconds: float | None = None,
    ) -> Signal:
        return (await self.signals([symbol], as_of_ms, now=now, max_age_seconds=max_age_seconds))[0]

    async def signals(
        self,
        symbols: list[str],
        as_of_ms: int | None = None,
        *,
        now: datetime | None = None,
        max_age_seconds: float | None = None,
    ) -> list[Signal]:
        """Signals as of `as_of_ms` (else `now`, else the service's clock) for several offered symbols (see
        `resolve_symbol`), scored on the inference thread in one batch with the other requests waiting then.

        `max_age_seconds` overrides the service's for this call (the route passes SIGNAL_MAX_AGE_SECONDS)."""
        at_ms = as_of_ms if as_of_ms is not None else _to_ms(now if now is not None else self.clock())
        max_age = self.max_age_seconds if max_age_seconds is None else max_age_seconds
        offered, excluded = offered_symbols(symbols_with_data(self.market), self.markets)
        resolved = [resolve_symbol(s, offered, excluded) for s in symbols]
        history = [await self.history(symbol, at_ms) for symbol in resolved]
        champion = self.champion
        if champion is None and not self.allow_fallback:
            self._fallback_refused("no champion model is registered")
        made = await self._infer(Request(champion, history, max_age))
        for signal in made:
            self._count(signal)
        return made

    async def _infer(self, request: "Request") -> list[Signal]:
        """`request`'s signals, computed with every request queued while the inference thread was busy: one
        batch per turn of the thread, so a burst of requests costs one vote per turn, not one per request."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Signal]] = loop.create_future()
        self._queue.append((request, future))
        drainer = self._drainer
        if drainer is None or drainer.done() or drainer.get_loop() is not loop:
            self._drainer = loop.create_task(self._drain(), name="signal-inference-batches")
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            batch = [(r, f) for r, f in batch if not f.done() and f.get_loop() is loop]  # cancelled meanwhile
            if not batch:
                continue
            try:
                results = await self._off_loop(self.compute_many, [r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: handed to every request in it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def history(self, symbol: str, at_ms: int) -> History:
        """The newest `history_candles` candles closed by `at_ms`, however old (the signal then says it is
        stale), and the funding settled by then."""
        step = self.timeframe_ms
        try:
            # end is exclusive on the open time: a candle opened at o is closed by at_ms when o + step <= at_ms
            candles = await self.market.candles(symbol, self.timeframe, None, at_ms - step + 1)
            if len(candles) == 0:
                raise NotFound(f"no {self.timeframe} candles of {symbol} closed by {_iso(at_ms)}")
            candles = candles.slice(max(0, len(candles) - self.history_candles), len(candles))
            funding = await self.market.funding(symbol, int(candles.timestamp[0]), at_ms + 1)
        except UnknownMarketData as exc:
            raise NotFound(str(exc)) from exc
        except MarketDataError as exc:
            raise ServiceUnavailable(f"market data unavailable: {exc}") from exc
        return History(candles, funding, at_ms)

    def compute(self, champion: Champion | None, history: list[History], max_age_seconds: float) -> list[Signal]:
        """The signals of `history` (blocking: features, models, ensemble); the caller counts them."""
        (result,) = self.compute_many([Request(champion, history, max_age_seconds)])
        if isinstance(result, Exception):
            raise result
        return result

    def compute_many(self, requests: list["Request"]) -> list[list[Signal] | ServiceUnavailable]:
        """The signals of several requests (blocking), the symbols of all requests with the same champion
        scored by the models in one batch; a request that cannot be answered gets its own error."""
        rows = [(r, h) for r, request in enumerate(requests) for h in request.history]
        made: list[Signal | ServiceUnavailable | None] = [None] * len(rows)
        groups: dict[int, tuple[Champion, list[int]]] = {}
        for k, (r, h) in enumerate(rows):
            champion, max_age = requests[r].champion, requests[r].max_age_seconds
            if champion is None:
                made[k] = self._fallback_or_error(h, "no champion model is registered", max_age)
            elif not champion.trained.ensemble.usable:
                why = "the champion's ensemble has no weights (no member beat the prior)"
                made[k] = self._fallback_or_error(h, why, max_age)
            else:
                groups.setdefault(id(champion), (champion, []))[1].append(k)
        for champion, ks in groups.values():
            voted = self._vote(champion, [rows[k][1] for k in ks], [requests[rows[k][0]].max_age_seconds for k in ks])
            for k, signal in zip(ks, voted, strict=True):
                made[k] = signal
        out: list[list[Signal] | ServiceUnavailable] = []
        for r in range(len(requests)):
            mine = [m for (owner, _), m in zip(rows, made, strict=True) if owner == r]
            error = next((m for m in mine if isinstance(m, ServiceUnavailable)), None)
            out.append(error if error is not None else [m for m in mine if isinstance(m, Signal)])
        return out

    def _count(self, signal: Signal) -> None:
        if signal.source == FALLBACK_SOURCE:
            self.stats.fallback_signals += 1
            self.stats.last_fallback_at = datetime.now(UTC)
            FALLBACK_SIGNALS.inc()
            logger.warning("signal_from_fallback", extra={"symbol": signal.symbol, "reason": signal.detail})
        else:
            self.stats.signals += 1
        SIGNALS.labels(source=signal.source).inc()

    def _fallback_refused(self, why: str) -> None:
        raise ServiceUnavailable(f"{why}, and the momentum fallback is disabled (SIGNAL_FALLBACK_ENABLED)")

    def _freshness(self, candles: Candles, at_ms: int, max_age_seconds: float) -> tuple[datetime, float, bool]:
        """The newest candle's close, its age at `at_ms` (seconds) and whether that is stale."""
        closed_ms = int(candles.timestamp[-1]) + self.timeframe_ms
        age = (at_ms - closed_ms) / 1000
        return datetime.fromtimestamp(closed_ms / 1000, tz=UTC), age, age > max_age_seconds

    def _fallback(self, history: History, why: str, max_age_seconds: float) -> Signal:
        candles = history.candles
        if not self.allow_fallback:
            self._fallback_refused(why)
        try:
            rule = momentum_signal(candles)
        except NotEnoughHistory as exc:
            raise ServiceUnavailable(f"{why}; fallback: {exc}") from exc
        rvol = compute_features(candles).column("rvol_24")[-1]
        as_of, age, stale = self._freshness(candles, history.at_ms, max_age_seconds)
        return Signal(
            symbol=candles.symbol,
            side=rule.side,
            confidence=rule.confidence,
            source=FALLBACK_SOURCE,
            regime=None,
            strategy=None,
            votes=[],
            as_of=as_of,
            model_version_id=None,
            price=float(candles.close[-1]),
            volatility=float(rvol) if np.isfinite(rvol) else None,
            detail=f"{why}; 24h change {rule.change_24h_pct:+.2f} %",
            stale=stale,
            age_seconds=age,
            confidence_kind=RULE_CONFIDENCE,
            confidence_detail="the momentum fallback's own confidence: no model, no probability",
        )

    def _fallback_or_error(self, history: History, why: str, max_age_seconds: float) -> Signal | ServiceUnavailable:
        try:
            return self._fallback(history, why, max_age_seconds)
        except ServiceUnavailable as exc:
            return exc

    def _vote(
        self, champion: Champion, history: list[History], max_ages: list[float]
    ) -> list[Signal | ServiceUnavailable]:
        """The champion's signals for every history (its max age beside it), the models run once on all rows."""
        trained = champion.trained
        inputs = [latest_inputs(h.candles, h.funding, trained.config) for h in history]
        ready = [i for i, item in enumerate(inputs) if item.ready]
        out: list[Signal | ServiceUnavailable | None] = [None] * len(history)
        for i, item in enumerate(inputs):
            if not item.ready:
                out[i] = self._fallback_or_error(history[i], "not enough history for the models' features", max_ages[i])
        if ready:
            x = np.vstack([inputs[i].x for i in ready])
            windows = np.vstack([inputs[i].window for i in ready])
            per_model = weighted_probabilities(trained, x, windows)
            combined = trained.ensemble.combine(per_model)
            # the meta layer for the ensemble's argmax side, all rows at once: the regime filter only ever turns
            # a call into HOLD, so a served LONG/SHORT is that side
            meta = meta_probabilities(champion.meta, x, combined)
            for row, i in enumerate(ready):
                out[i] = self._signal(
                    champion, history[i], inputs[i].features, per_model, combined, row, max_ages[i], meta
                )
        return [s for s in out if s is not None]

    def _signal(
        self,
        champion: Champion,
        history: History,
        features: FeatureMatrix,
        per_model: dict[str, FloatArray],
        combined: FloatArray,
        row: int,
        max_age_seconds: float,
        meta: FloatArray | None = None,
    ) -> Signal:
        candles = history.candles
        last = len(candles) - 1
        decision = decide(combined[row], features, last)
        side, confidence, regime, strategy = decision.side, decision.confidence, decision.regime, decision.strategy
        confidence_kind, detail = DIRECTION_PROBABILITY, HOLD_CONFIDENCE
        if side != "HOLD":
            if champion.meta is None or meta is None:
                detail = f"direction probability: the champion has no meta layer ({champion.meta_absent})"
            else:
                confidence, confidence_kind = float(meta[row]), P_TP_BEFORE_SL
                detail = describe_meta(champion.meta)
        weights = champion.trained.ensemble.weights
        votes = []
        for kind in member_kinds(champion.trained):
            p = per_model.get(kind)
            version_id = champion.member_ids.get(kind)
            weight = float(weights.get(kind, 0.0))
            if p is None:
                votes.append(ModelVote(kind, version_id, None, None, weight, ran=False, note=NOT_RUN))
                continue
            probabilities = {c: float(v) for c, v in zip(CLASSES, p[row], strict=True)}
            note = champion.member_notes.get(kind)
            votes.append(ModelVote(kind, version_id, CLASSES[int(p[row].argmax())], probabilities, weight, note=note))
        as_of, age, stale = self._freshness(candles, history.at_ms, max_age_seconds)
        return Signal(
            symbol=candles.symbol,
            side=side,
            confidence=confidence,
            source=ENSEMBLE_SOURCE,
            regime=regime.value,
            strategy=strategy.value,
            votes=votes,
            as_of=as_of,
            model_version_id=str(champion.version.id),
            price=float(candles.close[-1]),
            volatility=float(features.column("rvol_24")[last]),
            stale=stale,
            age_seconds=age,
            direction_confidence=decision.confidence,
            confidence_kind=confidence_kind,
            confidence_detail=detail,
        )


def meta_probabilities(meta: MetaModel | None, x: FloatArray, combined: FloatArray) -> FloatArray | None:
    """The meta layer's P(TP1 before the stop) per row for the ensemble's argmax side (NaN where it is HOLD)."""
    if meta is None:
        return None
    return meta.predict_proba(x, combined, sides_from_probabilities(combined))


def describe_meta(meta: MetaModel) -> str:
    """What the meta probability refers to: the barriers recorded with the model."""
    b = meta.barriers
    if not b:
        return "P(TP1 before the stop), meta model, calibrated"
    where = (
        f"TP1 {b['atr_tp1_multiple']} x ATR{' x the regime scale' if b.get('regime_scaled') else ''} / stop "
        f"{b['atr_sl_multiple']} x ATR (ATR of {b.get('atr_bars')} closed candles, as the exit plan)"
        if b.get("volatility_scaled")
        else f"TP1 +{b['tp1_distance'] * 100:.2f} % / stop -{b['sl_distance'] * 100:.2f} %"
    )
    return (
        f"P(TP1 before the stop) from the next open, {where}, within {b['max_hold_bars']} candles; meta model "
        f"calibrated on data neither it nor the primary was fitted on (base rate {meta.base_rate:.3f})"
    )


def member_kinds(trained: TrainedModels) -> list[str]:
    """Every member of the set, in the order the trained set lists them (boosted trees, then forecasters)."""
    return [*trained.gbm, *trained.forecasters]


def weighted_probabilities(trained: TrainedModels, x: FloatArray, windows: FloatArray) -> dict[str, FloatArray]:
    """`TrainedModels.probabilities` for the members the ensemble weighs only: a zero-weight member is not run."""
    active = set(trained.ensemble.active)
    out = {kind: model.predict_proba(x) for kind, model in trained.gbm.items() if kind in active}
    for kind, forecaster in trained.forecasters.items():
        if kind in active:
            forecast = forecaster.predict(windows)
            out[kind] = forecast_to_probabilities(forecast, trained.residual_std[kind], trained.config.band)
    return out


def warm_up(trained: TrainedModels, meta: MetaModel | None = None) -> None:
    """Run every weighted member on a dummy input now (the forecasters are traced, frozen and profiled by
    torch's JIT on their first calls), so that the first request does not pay for it."""
    active = set(trained.ensemble.active)
    x = np.zeros((1, len(FEATURES)), dtype=np.float64)
    for kind, model in trained.gbm.items():
        if kind in active:
            model.predict_proba(x)
    for kind, forecaster in trained.forecasters.items():
        if kind in active:
            forecaster.warm_up(WARM_UP_CALLS)
    if meta is not None:
        meta.predict_proba(x, np.full((1, len(CLASSES)), 1.0 / len(CLASSES)), [1])


def _load_and_warm(directory: Path) -> tuple[TrainedModels, dict[str, Any], MetaLayer]:
    trained, metadata = load_ensemble(directory)
    layer = load_meta(directory)
    began = time.perf_counter()
    warm_up(trained, layer.model)
    logger.info("signal_champion_warmed", extra={"seconds": round(time.perf_counter() - began, 3)})
    return trained, metadata, layer


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat()
