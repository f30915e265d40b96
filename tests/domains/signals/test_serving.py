"""Serving signals through `SignalService` on real candles: no look-ahead (a signal as of t is the same
whatever the candles after t are, and changes with the last candle closed by t), stale signals say so,
inference runs on the service's own thread with zero-weight members skipped, and the champion is warmed
when it is loaded; a LONG/SHORT call's confidence is the meta layer's P(TP1 before the stop), with the
direction probability beside it, and a champion without a meta layer says so."""

import asyncio
import dataclasses
import gzip
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.core.errors import NotFound, ServiceUnavailable
from app.domains.learning.backtest import served_barriers
from app.domains.learning.dataset import split_by_time, symbol_rows
from app.domains.learning.pipeline import MarketSeries, train_meta_layer
from app.domains.learning.training import fit_models
from app.domains.markets.candles import Candles, Funding
from app.domains.markets.marketdata import ReplayMarketData, default_data_root, symbol_file_stem
from app.domains.signals.artifacts import save_ensemble
from app.domains.signals.ensemble import Ensemble
from app.domains.signals.modelset import TrainedModels, TrainingConfig, latest_inputs
from app.domains.signals.service import (
    DIRECTION_PROBABILITY,
    HOLD_CONFIDENCE,
    INFERENCE_NICE,
    NOT_RUN,
    P_TP_BEFORE_SL,
    RULE_CONFIDENCE,
    Champion,
    Signal,
    SignalService,
    weighted_probabilities,
)

HOUR = 3_600_000
SYMBOL = "BTC/USDT:USDT"
T_ON_HOUR = "2024-03-05T00:00:00+00:00"
T_OFF_HOUR = "2024-03-05T00:30:00+00:00"
# Weights that run one tree model and one forecaster, and leave one of each out.
WEIGHTS = {"xgboost": 0.6, "lightgbm": 0.0, "nhits": 0.4, "patchtst": 0.0}


def ms(moment: str) -> int:
    return int(datetime.fromisoformat(moment).timestamp() * 1000)


# --- data: a slice of the bundled files, optionally perturbed --------------------------------------


def _bundled(name: str) -> Path:
    path = default_data_root() / name
    if not path.exists():
        pytest.skip(f"!!! market data missing: {path} (expected ../shared beside the repository)")
    return path


@dataclass(frozen=True)
class Series:
    candles: Candles
    funding: Funding


def bundled_series(symbol: str, start_ms: int, end_ms: int) -> Series:
    stem = symbol_file_stem(symbol)
    candles = ReplayMarketData.load_candles_file(_bundled(f"{stem}-1h-futures.csv.gz"), symbol, "1h")
    funding = ReplayMarketData.load_funding_file(_bundled(f"{stem}-8h-funding_rate.csv.gz"), symbol)
    c0, c1 = np.searchsorted(candles.timestamp, [start_ms, end_ms])
    f0, f1 = np.searchsorted(funding.timestamp, [start_ms, end_ms])
    return Series(
        candles.slice(int(c0), int(c1)),
        Funding(symbol, funding.timestamp[int(f0) : int(f1)], funding.rate[int(f0) : int(f1)]),
    )


def perturbed(series: Series, rows: np.ndarray, settled_after_ms: int | None, seed: int) -> Series:
    """Prices (open, high, low, close, by one factor per row, so OHLC stays consistent) and volumes of
    `rows` multiplied by random factors; funding settled after `settled_after_ms` replaced by random rates."""
    rng = np.random.default_rng(seed)
    c = series.candles
    price = np.ones(len(c))
    price[rows] = rng.uniform(0.5, 1.5, int(np.count_nonzero(rows)))
    volume = np.ones(len(c))
    volume[rows] = rng.uniform(0.1, 3.0, int(np.count_nonzero(rows)))
    candles = Candles(
        c.symbol,
        c.timeframe,
        c.timestamp.copy(),
        c.open * price,
        c.high * price,
        c.low * price,
        c.close * price,
        c.volume * volume,
    )
    rate = series.funding.rate.copy()
    if settled_after_ms is not None:
        later = series.funding.timestamp > settled_after_ms
        rate[later] = rng.normal(0.0, 0.001, int(np.count_nonzero(later)))
    return Series(candles, Funding(series.funding.symbol, series.funding.timestamp.copy(), rate))


def after(series: Series, t_ms: int) -> np.ndarray:
    """Candles not closed by t (open time + 1 h > t)."""
    return np.asarray(series.candles.timestamp + HOUR > t_ms)


def write_market(root: Path, *all_series: Series) -> ReplayMarketData:
    """The series as bundled files under `root`, served by a fresh replay provider."""
    root.mkdir(parents=True, exist_ok=True)
    for s in all_series:
        c, f = s.candles, s.funding
        stem = symbol_file_stem(c.symbol)
        lines = ["timestamp,open,high,low,close,volume"]
        lines += [
            f"{int(t)},{o!r},{h!r},{lo!r},{cl!r},{v!r}"
            for t, o, h, lo, cl, v in zip(
                c.timestamp,
                c.open.tolist(),
                c.high.tolist(),
                c.low.tolist(),
                c.close.tolist(),
                c.volume.tolist(),
                strict=True,
            )
        ]
        (root / f"{stem}-1h-futures.csv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        rates = ["timestamp,funding_rate"] + [
            f"{int(t)},{r!r}" for t, r in zip(f.timestamp, f.rate.tolist(), strict=True)
        ]
        (root / f"{stem}-8h-funding_rate.csv.gz").write_bytes(gzip.compress(("\n".join(rates) + "\n").encode()))
    return ReplayMarketData(root)


# --- a small trained set -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained() -> TrainedModels:
    return small_trained_set()


def small_trained_set() -> TrainedModels:
    """The four models fitted on three months of BTC (one torch epoch), with `WEIGHTS` as the ensemble."""
    config = TrainingConfig(torch_epochs=1)
    data = bundled_series(SYMBOL, ms("2023-09-01T00:00:00+00:00"), ms("2023-12-01T00:00:00+00:00"))
    rows = symbol_rows(data.candles, data.funding, config)
    fitted = fit_models(split_by_time([rows], int(rows.timestamp[-1]) + 1, 0)[0], config)
    return replace(fitted, ensemble=Ensemble(WEIGHTS, fitted.ensemble.temperature or 1.0))


@dataclass(frozen=True)
class FakeVersion:
    """Stands in for the registry row of the champion."""

    id: str = "serving-test"
    artifact_path: str = ""


class FakeRegistry:
    def __init__(self, version: FakeVersion | None) -> None:
        self.version = version

    async def champion(self, kind: str) -> FakeVersion | None:
        return self.version if kind == "ensemble" else None


def champion_of(trained: TrainedModels) -> Champion:
    return Champion(FakeVersion(), trained, {kind: f"{kind}-v" for kind in WEIGHTS})  # type: ignore[arg-type]


def service_for(market: ReplayMarketData, trained: TrainedModels | None, **kwargs: Any) -> SignalService:
    service = SignalService(market, FakeRegistry(None), allow_fallback=True, **kwargs)  # type: ignore[arg-type]
    service.champion = champion_of(trained) if trained is not None else None
    return service


def as_dict(signal: Signal) -> dict[str, Any]:
    return dataclasses.asdict(signal)


async def served(market: ReplayMarketData, trained: TrainedModels | None, t_ms: int) -> Signal:
    service = service_for(market, trained)
    try:
        return await service.signal("BTCUSDT", t_ms)
    finally:
        await service.close()


# --- no look-ahead -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btc_around_t() -> Series:
    return bundled_series(SYMBOL, ms(T_ON_HOUR) - 1000 * HOUR, ms(T_ON_HOUR) + 300 * HOUR)


@pytest.mark.parametrize("with_champion", [True, False], ids=["ensemble", "fallback"])
@pytest.mark.parametrize("t", [T_ON_HOUR, T_OFF_HOUR])
async def test_a_signal_as_of_t_is_unchanged_when_every_candle_after_t_is_perturbed(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, t: str, with_champion: bool
) -> None:
    t_ms = ms(t)
    model = trained if with_champion else None
    original = await served(write_market(tmp_path / "original", btc_around_t), model, t_ms)
    for seed in (1, 2, 3):
        changed = perturbed(btc_around_t, after(btc_around_t, t_ms), t_ms, seed)
        assert not np.allclose(changed.candles.close, btc_around_t.candles.close)
        again = await served(write_market(tmp_path / f"perturbed-{seed}", changed), model, t_ms)
        assert as_dict(again) == as_dict(original)
    assert original.source == ("ensemble" if with_champion else "fallback_momentum")
    # as_of is the close of the newest candle used: the last one closed by t
    assert original.as_of == datetime.fromtimestamp((t_ms // HOUR) * HOUR / 1000, tz=UTC)
    assert original.age_seconds == (t_ms % HOUR) / 1000 and not original.stale
    last_closed = int(np.flatnonzero(~after(btc_around_t, t_ms))[-1])
    assert original.price == btc_around_t.candles.close[last_closed]


@pytest.mark.parametrize("with_champion", [True, False], ids=["ensemble", "fallback"])
async def test_the_signal_changes_when_the_last_candle_closed_by_t_changes(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, with_champion: bool
) -> None:
    """The control: the test above can fail. Perturbing the candle that closes exactly at t changes it."""
    t_ms = ms(T_ON_HOUR)
    model = trained if with_champion else None
    original = await served(write_market(tmp_path / "original", btc_around_t), model, t_ms)
    closing_at_t = np.asarray(btc_around_t.candles.timestamp == t_ms - HOUR)
    assert closing_at_t.sum() == 1
    changed = await served(
        write_market(tmp_path / "changed", perturbed(btc_around_t, closing_at_t, None, 7)), model, t_ms
    )
    assert changed.price != original.price and changed.as_of == original.as_of
    if with_champion:
        ran = [(a.probabilities, b.probabilities) for a, b in zip(original.votes, changed.votes, strict=True) if a.ran]
        assert ran and all(a != b for a, b in ran)
    else:
        assert changed.confidence != original.confidence or changed.side != original.side


async def test_a_candle_opened_at_t_is_not_used(tmp_path: Path, btc_around_t: Series) -> None:
    """The look-ahead the old path had: the candle opened at t (closing an hour later) must not count."""
    t_ms = ms(T_ON_HOUR)
    service = service_for(write_market(tmp_path / "m", btc_around_t), None)
    history = await service.history(SYMBOL, t_ms)
    assert int(history.candles.timestamp[-1]) == t_ms - HOUR and len(history.candles) == service.history_candles
    assert int(history.funding.timestamp[-1]) <= t_ms
    await service.close()


# --- stale signals -------------------------------------------------------------------------------


async def test_a_signal_whose_newest_candle_is_old_says_stale(tmp_path: Path, btc_around_t: Series) -> None:
    market = write_market(tmp_path / "m", btc_around_t)
    end_close = int(btc_around_t.candles.timestamp[-1]) + HOUR  # the data stops here
    service = service_for(market, None, max_age_seconds=3 * 3600)
    fresh = await service.signal("BTCUSDT", end_close + 3 * HOUR)  # exactly the max age: not stale
    assert (fresh.stale, fresh.age_seconds) == (False, 3 * 3600.0)
    late = await service.signal("BTCUSDT", end_close + 3 * HOUR + 1000)
    assert (late.stale, late.age_seconds) == (True, 3 * 3600.0 + 1.0)
    assert late.as_of == datetime.fromtimestamp(end_close / 1000, tz=UTC) and late.price == fresh.price
    tighter = await service.signal("BTCUSDT", end_close + 600_000, max_age_seconds=300)
    assert (tighter.stale, tighter.age_seconds) == (True, 600.0)
    await service.close()


async def test_without_a_time_the_signal_is_as_of_the_services_clock(tmp_path: Path, btc_around_t: Series) -> None:
    market = write_market(tmp_path / "m", btc_around_t)
    now = datetime.fromisoformat("2024-03-06T10:20:00+00:00")
    service = service_for(market, None, clock=lambda: now)
    by_clock = await service.signal("BTCUSDT")
    assert by_clock.as_of == datetime.fromisoformat("2024-03-06T10:00:00+00:00")
    assert (by_clock.age_seconds, by_clock.stale) == (1200.0, False)
    assert as_dict(by_clock) == as_dict(await service.signal("BTCUSDT", ms("2024-03-06T10:20:00+00:00")))
    passed = await service.signal("BTCUSDT", now=datetime.fromisoformat("2024-03-06T12:00:00+00:00"))
    assert passed.as_of == datetime.fromisoformat("2024-03-06T12:00:00+00:00") and passed.age_seconds == 0
    with pytest.raises(NotFound, match="closed by"):
        await service.signal("BTCUSDT", int(btc_around_t.candles.timestamp[0]))
    await service.close()


# --- inference off the event loop ----------------------------------------------------------------


async def test_zero_weight_members_are_not_run_and_say_so(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a zero-weight member was run")

    monkeypatch.setattr(trained.gbm["lightgbm"], "predict_proba", refuse)
    monkeypatch.setattr(trained.forecasters["patchtst"], "predict", refuse)
    signal = await served(write_market(tmp_path / "m", btc_around_t), trained, ms(T_ON_HOUR))
    votes = {v.kind: v for v in signal.votes}
    assert list(votes) == ["xgboost", "lightgbm", "nhits", "patchtst"]
    for kind in ("lightgbm", "patchtst"):
        assert (votes[kind].ran, votes[kind].side, votes[kind].probabilities) == (False, None, None)
        assert (votes[kind].weight, votes[kind].note, votes[kind].version_id) == (0.0, NOT_RUN, f"{kind}-v")
    for kind in ("xgboost", "nhits"):
        vote = votes[kind]
        assert vote.ran and vote.probabilities is not None and vote.note is None
        assert sum(vote.probabilities.values()) == pytest.approx(1.0) and vote.weight == WEIGHTS[kind]


async def test_inference_runs_on_the_services_thread_and_the_loop_stays_responsive(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    priorities: list[int] = []
    torch_threads: list[int] = []
    loop_torch_threads = torch.get_num_threads()
    predict = trained.gbm["xgboost"].predict_proba

    def slow(x: np.ndarray) -> Any:
        threads.append(threading.current_thread().name)
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        torch_threads.append(torch.get_num_threads())
        time.sleep(0.3)  # a model that takes its time (the GIL is released, as in the libraries' native code)
        return predict(x)

    monkeypatch.setattr(trained.gbm["xgboost"], "predict_proba", slow)
    service = service_for(write_market(tmp_path / "m", btc_around_t), trained)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - began - 0.001)

    ticking = asyncio.create_task(ticker())
    try:
        signals = await asyncio.gather(*(service.signal("BTCUSDT", ms(T_ON_HOUR)) for _ in range(3)))
    finally:
        ticking.cancel()
        await service.close()
    # the three were scored in one batch (float32 batched matmuls: equal up to rounding)
    assert [s.confidence for s in signals] == pytest.approx([signals[0].confidence] * 3, rel=1e-6)
    assert threads and all(name.startswith("signal-inference") for name in threads)
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert set(priorities) == {min(19, loop_priority + INFERENCE_NICE)}, "a lower OS priority than the loop's"
    assert set(torch_threads) == {1} and torch.get_num_threads() == loop_torch_threads, "set for that thread only"
    assert len(lags) > 100 and max(lags) < 0.1, max(lags)


async def test_close_stops_the_thread_and_a_later_call_starts_one(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels
) -> None:
    service = service_for(write_market(tmp_path / "m", btc_around_t), trained)
    first = await service.signal("BTCUSDT", ms(T_ON_HOUR))
    executor = service._executor
    assert executor is not None
    await service.close()
    assert service._executor is None and executor._shutdown
    again = await service.signal("BTCUSDT", ms(T_ON_HOUR))
    assert as_dict(again) == as_dict(first)
    await service.close()


async def test_the_champion_is_warmed_when_it_is_loaded(tmp_path: Path, trained: TrainedModels) -> None:
    directory = tmp_path / "artifact"
    save_ensemble(trained, directory, {"members": {kind: f"{kind}-v" for kind in WEIGHTS}})
    registry = FakeRegistry(FakeVersion(artifact_path=str(directory)))
    service = SignalService(ReplayMarketData(tmp_path / "none"), registry, allow_fallback=True)  # type: ignore[arg-type]
    champion = await service.load_champion()
    assert champion is not None and champion.member_ids["nhits"] == "nhits-v"
    forecasters = champion.trained.forecasters
    assert forecasters["nhits"]._inference is not None, "the weighted forecaster is traced at load"
    assert forecasters["patchtst"]._inference is None, "a zero-weight forecaster is not even warmed"
    await service.close()


async def test_concurrent_requests_are_scored_together_and_keep_their_own_errors(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the inference thread is busy, requests queue and the next turn scores them all in one batch;
    a request that cannot be answered (here: too little history, fallback disabled) fails alone."""
    t_ms = ms(T_ON_HOUR)
    eth = bundled_series("ETH/USDT:USDT", t_ms - 50 * HOUR, t_ms + 10 * HOUR)  # warming up: not ready
    service = service_for(write_market(tmp_path / "m", btc_around_t, eth), trained)
    service.allow_fallback = False
    batches: list[int] = []
    entered, release = threading.Event(), threading.Event()
    compute_many = service.compute_many

    def spy(requests: list[Any]) -> Any:
        batches.append(len(requests))
        if len(batches) == 1:
            entered.set()
            release.wait(5)  # the first turn is busy until the others have queued
        return compute_many(requests)

    monkeypatch.setattr(service, "compute_many", spy)
    first = asyncio.create_task(service.signal("BTCUSDT", t_ms))
    assert await asyncio.to_thread(entered.wait, 5)
    calls = [service.signal("BTCUSDT", t_ms - k * HOUR) for k in range(1, 8)] + [service.signal("ETHUSDT", t_ms)]
    queued = asyncio.gather(*calls, return_exceptions=True)
    await asyncio.sleep(0.1)
    release.set()
    results = [await first, *(await queued)]
    assert batches == [1, 8], batches
    assert all(isinstance(r, Signal) and r.source == "ensemble" for r in results[:8])
    assert [r.as_of for r in results[:8]] == [  # type: ignore[union-attr]
        datetime.fromtimestamp((t_ms - k * HOUR) / 1000, tz=UTC) for k in range(8)
    ]
    assert isinstance(results[8], ServiceUnavailable) and "not enough history" in str(results[8])
    alone = await service.signal("BTCUSDT", t_ms)
    assert alone.side == results[0].side and alone.confidence == pytest.approx(results[0].confidence)  # type: ignore[union-attr]
    await service.close()


async def test_a_cancelled_request_does_not_stop_the_others(
    tmp_path: Path, btc_around_t: Series, trained: TrainedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_for(write_market(tmp_path / "m", btc_around_t), trained)
    compute_many = service.compute_many

    def slow(requests: list[Any]) -> Any:
        time.sleep(0.05)
        return compute_many(requests)

    monkeypatch.setattr(service, "compute_many", slow)
    first = asyncio.create_task(service.signal("BTCUSDT", ms(T_ON_HOUR)))
    others = [asyncio.create_task(service.signal("BTCUSDT", ms(T_ON_HOUR) - k * HOUR)) for k in range(1, 4)]
    await asyncio.sleep(0.01)
    first.cancel()
    others[0].cancel()
    done = await asyncio.gather(*others[1:])
    assert [s.source for s in done] == ["ensemble", "ensemble"]
    assert first.cancelled() and others[0].cancelled()
    await service.close()


# --- the meta layer: confidence = P(TP1 before the stop) ---------------------------------------------


@pytest.fixture(scope="module")
def meta_artifacts(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModels) -> dict[str, Path]:
    """The small trained set as champion artifacts: one with a meta layer trained for real (cross-fitted
    primaries on six months of BTC, barrier labels, `fit_meta`), one without."""
    config = trained.config
    data = bundled_series(SYMBOL, ms("2023-06-01T00:00:00+00:00"), ms("2023-12-01T00:00:00+00:00"))
    rows = symbol_rows(data.candles, data.funding, config)
    until = int(rows.timestamp[-1]) + 1
    layer = train_meta_layer([MarketSeries(data.candles, data.funding)], rows, config, served_barriers(), until)
    assert layer.model is not None, layer.absent
    root = tmp_path_factory.mktemp("meta-artifacts")
    members = {"members": {kind: f"{kind}-v" for kind in WEIGHTS}}
    save_ensemble(trained, root / "with-meta", members, meta=layer.model)
    save_ensemble(trained, root / "without-meta", members, meta_absent="too few rows to fit honestly")
    return {"with": root / "with-meta", "without": root / "without-meta"}


async def loaded_service(market: ReplayMarketData, artifact: Path) -> SignalService:
    registry = FakeRegistry(FakeVersion(artifact_path=str(artifact)))
    service = SignalService(market, registry, allow_fallback=True)  # type: ignore[arg-type]
    assert await service.load_champion() is not None
    return service


async def first_calls(service: SignalService, start_ms: int, hours: int = 72) -> dict[str, tuple[int, Signal]]:
    """The first LONG/SHORT call and the first HOLD served from `start_ms` on, hour by hour."""
    found: dict[str, tuple[int, Signal]] = {}
    for k in range(hours):
        t_ms = start_ms + k * HOUR
        signal = await service.signal("BTCUSDT", t_ms)
        found.setdefault("HOLD" if signal.side == "HOLD" else "trade", (t_ms, signal))
        if len(found) == 2:
            break
    assert "trade" in found, "no LONG/SHORT call in the hours scanned"
    return found


async def test_a_trade_call_serves_the_meta_layers_p_tp_before_sl_beside_the_direction_probability(
    tmp_path: Path, btc_around_t: Series, meta_artifacts: dict[str, Path]
) -> None:
    service = await loaded_service(write_market(tmp_path / "m", btc_around_t), meta_artifacts["with"])
    champion = service.champion
    assert champion is not None and champion.meta is not None
    found = await first_calls(service, ms(T_ON_HOUR))
    t_ms, signal = found["trade"]
    # recompute both layers by hand from the candles closed by t
    history = await service.history(SYMBOL, t_ms)
    inputs = latest_inputs(history.candles, history.funding, champion.trained.config)
    combined = champion.trained.ensemble.combine(weighted_probabilities(champion.trained, inputs.x, inputs.window))
    side = 1 if signal.side == "LONG" else -1
    expected = champion.meta.predict_proba(inputs.x, combined, [side])[0]
    assert signal.confidence_kind == P_TP_BEFORE_SL and signal.confidence == pytest.approx(expected, abs=1e-12)
    assert signal.direction_confidence == pytest.approx(float(combined[0].max()), abs=1e-12)
    assert signal.confidence != signal.direction_confidence
    assert signal.confidence_detail is not None and (
        "TP1 1.95 x ATR x the regime scale / stop 2.0 x ATR (ATR of 14 closed candles, as the exit plan), within 24"
        in signal.confidence_detail
    )
    if "HOLD" in found:
        hold = found["HOLD"][1]
        assert hold.confidence_kind == DIRECTION_PROBABILITY and hold.confidence_detail == HOLD_CONFIDENCE
        assert hold.confidence == hold.direction_confidence
    await service.close()


async def test_the_meta_confidence_as_of_t_is_unchanged_when_every_candle_after_t_is_perturbed(
    tmp_path: Path, btc_around_t: Series, meta_artifacts: dict[str, Path]
) -> None:
    service = await loaded_service(write_market(tmp_path / "original", btc_around_t), meta_artifacts["with"])
    t_ms, original = (await first_calls(service, ms(T_ON_HOUR)))["trade"]
    await service.close()
    assert original.confidence_kind == P_TP_BEFORE_SL
    for seed in (1, 2, 3):
        changed = perturbed(btc_around_t, after(btc_around_t, t_ms), t_ms, seed)
        again_service = await loaded_service(write_market(tmp_path / f"p{seed}", changed), meta_artifacts["with"])
        again = await again_service.signal("BTCUSDT", t_ms)
        await again_service.close()
        assert as_dict(again) == as_dict(original)
    # the control: the candle closing at t changes the meta probability
    closing_at_t = np.asarray(btc_around_t.candles.timestamp == t_ms - HOUR)
    control_market = write_market(tmp_path / "control", perturbed(btc_around_t, closing_at_t, None, 7))
    control_service = await loaded_service(control_market, meta_artifacts["with"])
    control = await control_service.signal("BTCUSDT", t_ms)
    await control_service.close()
    assert (control.side, control.confidence, control.direction_confidence) != (
        original.side,
        original.confidence,
        original.direction_confidence,
    )


async def test_a_champion_without_a_meta_layer_serves_the_direction_probability_and_says_so(
    tmp_path: Path, btc_around_t: Series, meta_artifacts: dict[str, Path]
) -> None:
    service = await loaded_service(write_market(tmp_path / "m", btc_around_t), meta_artifacts["without"])
    assert service.champion is not None and service.champion.meta is None
    _, signal = (await first_calls(service, ms(T_ON_HOUR)))["trade"]
    assert signal.confidence_kind == DIRECTION_PROBABILITY and signal.confidence == signal.direction_confidence
    assert signal.confidence_detail == (
        "direction probability: the champion has no meta layer (no meta layer in without-meta: "
        "too few rows to fit honestly)"
    )
    await service.close()
    fallback = await served(write_market(tmp_path / "f", btc_around_t), None, ms(T_ON_HOUR))
    assert fallback.confidence_kind == RULE_CONFIDENCE and fallback.direction_confidence is None
