"""Continuous learning: job lifecycle, conflicts, failures, the schedule's sample minimum, shutdown,
and once for real: a training job in a spawned process while the event loop stays responsive."""

import asyncio
import json
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.bus import EventBus
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import Conflict, ServiceUnavailable
from app.core.settings import Settings
from app.domains.learning.backtest import MODEL_METRICS, default_min_confidence
from app.domains.learning.clm import ClmConfig, ContinuousLearning, run_training_job, spawn_pool
from app.domains.markets.candles import Candles, Funding
from app.domains.markets.marketdata import MarketDataError, ReplayMarketData, default_data_root
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.service import ModelRegistry
from tests.support import EventRecorder

HOUR_MS = 3_600_000
KINDS = {"xgboost", "lightgbm", "nhits", "patchtst", "ensemble"}
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


T0 = ms("2024-01-01")


class FakeMarket:
    """Hourly candles from T0 up to a movable end: new data arrives when the test says so."""

    name = "fake"

    def __init__(self, hours: int = 1000) -> None:
        self.end_ms = T0 + hours * HOUR_MS
        self.error: Exception | None = None

    def advance(self, hours: int) -> None:
        self.end_ms += hours * HOUR_MS

    @property
    def data_end_ms(self) -> int:
        return self.end_ms - HOUR_MS + 1

    async def candles(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> Candles:
        if self.error is not None:
            raise self.error
        ts = np.arange(T0, self.end_ms, HOUR_MS, dtype=np.int64)
        lo = 0 if start_ms is None else int(np.searchsorted(ts, start_ms))
        hi = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms))
        ts = ts[lo:hi]
        ones = np.ones(len(ts))
        return Candles(symbol, timeframe, ts, ones, ones, ones, ones, ones)

    async def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> Funding:
        return Funding(symbol, np.empty(0, dtype=np.int64), np.empty(0))

    def symbols(self) -> list[str]:
        return list(SYMBOLS)


def stub_summary(job: dict[str, Any]) -> dict[str, Any]:
    """What run_training_job returns, without training anything."""
    versions = {kind: str(uuid.uuid4()) for kind in sorted(KINDS)}
    return {
        "versions": versions,
        "decisions": {
            kind: {
                "promoted": kind == "ensemble",
                "reason": "stub",
                "champion_id": versions[kind] if kind == "ensemble" else None,
                "previous_champion_id": None,
            }
            for kind in versions
        },
        "report": {"ensemble": {"log_loss": 1.05, "net_return": 0.01}},
        "fit_seconds": {kind: 0.0 for kind in versions},
        "train_rows": 100,
        "test_rows": 20,
        "data_until_ms": job["until_ms"],
        "duration_s": 0.0,
        "pid": os.getpid(),
    }


class StubJob:
    """Stands in for run_training_job on a thread: blocks until released, then returns or raises."""

    def __init__(self, *, released: bool = False) -> None:
        self.release = threading.Event()
        if released:
            self.release.set()
        self.jobs: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        self.jobs.append(job)
        if not self.release.wait(10):
            raise TimeoutError("the stub job was never released")
        if self.error is not None:
            raise self.error
        return stub_summary(job)


class RecordingPool(ThreadPoolExecutor):
    """A one-thread pool that remembers being shut down."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.shut_down = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shut_down = True
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


class Pools:
    def __init__(self) -> None:
        self.made: list[RecordingPool] = []

    def __call__(self) -> RecordingPool:
        pool = RecordingPool()
        self.made.append(pool)
        return pool


async def settled(clm: ContinuousLearning, seconds: float = 5.0) -> dict[str, Any]:
    """The status once no job runs."""
    deadline = time.monotonic() + seconds
    while clm.running:
        if time.monotonic() > deadline:
            raise AssertionError(f"job still running after {seconds} s: {clm.status()}")
        await asyncio.sleep(0.01)
    return clm.status()


Build = Callable[..., ContinuousLearning]


@pytest.fixture
async def build(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Build]:
    """ContinuousLearning on a thread pool and a stub job; every one built is stopped afterwards."""
    built: list[tuple[ContinuousLearning, StubJob]] = []

    def make(market: FakeMarket, stub: StubJob, config: ClmConfig | None = None, **kwargs: Any) -> ContinuousLearning:
        settings = make_settings(model_dir=str(tmp_path / "models"))
        kwargs.setdefault("executor_factory", Pools())
        clm = ContinuousLearning(settings, config or ClmConfig(), market, job=stub, **kwargs)
        built.append((clm, stub))
        return clm

    yield make
    for clm, stub in built:
        stub.release.set()
        await clm.stop()


async def test_idle_running_done(build: Build) -> None:
    market, stub, pools = FakeMarket(), StubJob(), Pools()
    clm = build(market, stub, executor_factory=pools)
    idle = clm.status()
    assert (idle["running"], idle["current"], idle["last"], idle["next_run_at"]) == (False, None, None, None)
    assert idle["config"]["symbols"] == list(SYMBOLS) and idle["config"]["enabled"] is False

    job = await clm.retrain("new data", "alice")
    assert (job["trigger"], job["reason"], job["actor"]) == ("manual", "new data", "alice")
    assert job["data_until"] == datetime.fromtimestamp(market.data_end_ms / 1000, tz=UTC).isoformat()
    running = clm.status()
    assert running["running"] is True and running["current"] == job and running["last"] is None

    stub.release.set()
    done = await settled(clm)
    assert done["running"] is False and done["current"] is None
    last = done["last"]
    assert (last["id"], last["ok"], last["error"], last["actor"]) == (job["id"], True, None, "alice")
    assert set(last["summary"]["versions"]) == KINDS and last["duration_s"] >= 0
    assert len(pools.made) == 1 and pools.made[0].shut_down

    sent = stub.jobs[0]
    settings = clm.settings
    assert sent["until_ms"] == market.data_end_ms and sent["symbols"] == list(SYMBOLS)
    assert sent["database_url"] == settings.database_url and Path(sent["model_dir"]).is_absolute()
    assert sent["db_engine_options"] == settings.db_engine_options()  # the child's waits are bounded too
    assert sent["margins"] == {"log_loss": settings.promotion_margin_log_loss, "net_return": 0.0}
    assert (sent["train_days"], sent["test_days"], sent["torch_epochs"]) == (730, 180, None)
    json.dumps(sent)


async def test_second_retrain_while_running_is_a_conflict(build: Build) -> None:
    stub = StubJob()
    clm = build(FakeMarket(), stub)
    first = await clm.retrain("first", "alice")
    with pytest.raises(Conflict) as raised:
        await clm.retrain("second", "bob")
    assert raised.value.extra["job"]["id"] == first["id"]
    stub.release.set()
    await settled(clm)
    second = await clm.retrain("after the first", "bob")
    assert second["id"] != first["id"]
    assert (await settled(clm))["last"]["id"] == second["id"]


async def test_concurrent_retrains_start_one_job(build: Build) -> None:
    stub = StubJob()
    clm = build(FakeMarket(), stub)
    results = await asyncio.gather(*(clm.retrain(f"race {i}", "x") for i in range(5)), return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 4


async def test_another_process_training_is_a_conflict(build: Build) -> None:
    """Two services on one model_dir (two uvicorn workers): the lock file lets only one train."""
    one, two = StubJob(), StubJob()
    first, second = build(FakeMarket(), one), build(FakeMarket(), two)
    await first.retrain("first", "alice")
    with pytest.raises(Conflict, match="another process"):
        await second.retrain("second", "bob")
    assert second.status()["running"] is False
    one.release.set()
    await settled(first)
    two.release.set()
    await second.retrain("now free", "bob")
    assert (await settled(second))["last"]["ok"] is True


async def test_a_failed_job_is_recorded_and_the_next_one_runs(build: Build) -> None:
    stub = StubJob(released=True)
    stub.error = ValueError("no data for ('BTC/USDT:USDT',) between ...")
    clm = build(FakeMarket(), stub)
    await clm.retrain("will fail", "alice")
    last = (await settled(clm))["last"]
    assert last["ok"] is False and last["summary"] is None
    assert last["error"] == {"type": "ValueError", "message": "no data for ('BTC/USDT:USDT',) between ..."}
    stub.error = None
    await clm.retrain("again", "alice")
    assert (await settled(clm))["last"]["ok"] is True


async def test_market_data_outage_refuses_and_frees_the_slot(build: Build, caplog: pytest.LogCaptureFixture) -> None:
    market = FakeMarket()
    clm = build(market, StubJob(released=True))
    market.error = MarketDataError("exchange down at /internal/path")
    with pytest.raises(ServiceUnavailable, match="market data unavailable") as refused:
        await clm.retrain("now", "alice")
    assert "/internal/path" not in refused.value.detail  # the cause is logged, not returned
    assert any("exchange down" in getattr(r, "error", "") for r in caplog.records)
    assert clm.status()["running"] is False
    market.error = None
    await clm.retrain("now", "alice")
    assert (await settled(clm))["last"]["ok"] is True


async def test_schedule_respects_min_new_samples(build: Build) -> None:
    market, stub = FakeMarket(), StubJob(released=True)
    clm = build(market, stub, ClmConfig(min_new_samples=24))

    first = await clm.check()
    assert first["new_samples"] is None and first["started_job_id"] is not None  # no previous run: train
    assert (await settled(clm))["last"]["trigger"] == "schedule"
    assert stub.jobs[-1]["until_ms"] == market.data_end_ms

    market.advance(10)
    skipped = await clm.check()
    assert (skipped["new_samples"], skipped["started_job_id"]) == (10, None)
    assert skipped["skipped"] == "10 new samples < 24"
    assert clm.status()["last_check"] == skipped and len(stub.jobs) == 1

    market.advance(14)
    started = await clm.check()
    assert (started["new_samples"], started["skipped"]) == (24, None) and started["started_job_id"]
    last = (await settled(clm))["last"]
    assert last["id"] == started["started_job_id"] and last["reason"] == "schedule: 24 new samples >= 24"
    assert stub.jobs[-1]["until_ms"] == market.data_end_ms

    again = await clm.check()
    assert again["new_samples"] == 0 and again["skipped"] == "0 new samples < 24"


async def test_schedule_skips_while_a_job_runs(build: Build) -> None:
    stub = StubJob()
    clm = build(FakeMarket(), stub)
    job = await clm.retrain("manual", "alice")
    check = await clm.check()
    assert check["skipped"] == f"job {job['id']} is running" and check["started_job_id"] is None


async def test_schedule_counts_from_the_newest_registered_run(
    build: Build, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """After a restart the last run is in the registry: new samples count from its data end."""
    settings = make_settings(model_dir=str(tmp_path / "models"))
    engine = create_engine(settings.database_url)
    registry = ModelRegistry(create_sessionmaker(engine), EventBus(), tmp_path / "models")
    market = FakeMarket(hours=2000)
    test_end = datetime.fromtimestamp((market.data_end_ms - 5 * HOUR_MS) / 1000, tz=UTC)
    artifact = tmp_path / "models" / "ensemble" / "old"
    artifact.mkdir(parents=True)
    await registry.register(
        "ensemble",
        artifact,
        symbols=list(SYMBOLS),
        timeframe="1h",
        train_start=datetime(2024, 1, 1, tzinfo=UTC),
        train_end=datetime(2024, 2, 1, tzinfo=UTC),
        test_start=datetime(2024, 2, 2, tzinfo=UTC),
        test_end=test_end,
        features=["f"],
        code_version="test",
        hyperparameters={},
        metrics={"log_loss": 1.0, "net_return": 0.0},
        artifact_sha256="0" * 64,
    )
    try:
        stub = StubJob(released=True)
        clm = build(market, stub, ClmConfig(min_new_samples=24), registry=registry)
        check = await clm.check()
        assert check["new_samples"] == 5 and check["skipped"] == "5 new samples < 24" and not stub.jobs
    finally:
        await engine.dispose()


async def test_scheduler_loop_starts_jobs_and_reports_next_run(build: Build) -> None:
    stub = StubJob(released=True)
    clm = build(FakeMarket(), stub, ClmConfig(enabled=True, interval_seconds=0.05, min_new_samples=24))
    await clm.start()
    assert clm.status()["next_run_at"] is not None
    deadline = time.monotonic() + 5
    while not (clm.status()["last"] and clm.status()["last_check"]["skipped"]):
        assert time.monotonic() < deadline, clm.status()
        await asyncio.sleep(0.01)
    status = clm.status()
    assert status["last"]["ok"] is True and status["last"]["actor"] == "scheduler"
    assert status["last_check"]["skipped"] == "0 new samples < 24"
    assert len(stub.jobs) == 1
    await clm.stop()
    assert clm.status()["next_run_at"] is None


async def test_decisions_are_published_on_the_api_bus(build: Build) -> None:
    recorder = EventRecorder()
    bus = EventBus(recorder.table())
    clm = build(FakeMarket(), StubJob(released=True), bus=bus)
    await clm.retrain("publish", "alice")
    last = (await settled(clm))["last"]
    await bus.drain()
    events = recorder.of(ModelPromoted)
    assert {e.kind for e in events} == KINDS
    ensemble = next(e for e in events if e.kind == "ensemble")
    assert ensemble.promoted is True and ensemble.candidate_id == last["summary"]["versions"]["ensemble"]


async def test_stop_cancels_the_job_and_cleans_up(build: Build, tmp_path: Path) -> None:
    stub, pools = StubJob(), Pools()
    clm = build(
        FakeMarket(),
        stub,
        ClmConfig(enabled=True, interval_seconds=3600),
        executor_factory=pools,
        stop_grace_seconds=0.05,
    )
    await clm.start()
    job = await clm.retrain("long job", "alice")
    started = time.monotonic()
    await clm.stop()
    assert time.monotonic() - started < 2
    status = clm.status()
    assert status["running"] is False and status["next_run_at"] is None
    assert status["last"]["id"] == job["id"] and status["last"]["ok"] is False
    assert status["last"]["error"]["type"] == "Cancelled"
    assert pools.made[0].shut_down
    with pytest.raises(ServiceUnavailable):
        await clm.retrain("after stop", "alice")
    await clm.stop()
    stub.release.set()
    other = build(FakeMarket(), StubJob(released=True))
    await other.retrain("the lock is free", "bob")
    assert (await settled(other))["last"]["ok"] is True


def test_the_job_scores_with_the_active_profiles_minimum_confidence(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(model_dir=str(tmp_path / "models"), quantum_risk_mode="DEFENSIVE")
    clm = ContinuousLearning(settings, ClmConfig(), ReplayMarketData())
    assert clm.job_spec("x", 0)["min_confidence"] == default_min_confidence("DEFENSIVE")
    assert default_min_confidence("DEFENSIVE") > default_min_confidence("NORMAL")  # the active profile, not the default


# --- the real thing ---------------------------------------------------------------------------


def require_market_data() -> None:
    path = default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz"
    if not path.exists():
        pytest.skip(f"!!! market data missing: {path} (expected ../shared beside the repository)")


SMALL = ClmConfig(symbols=("BTC/USDT:USDT",), train_days=60, test_days=10, torch_epochs=1)


async def test_run_training_job_in_a_spawned_process(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    require_market_data()
    settings = make_settings(model_dir=str(tmp_path / "models"))
    clm = ContinuousLearning(settings, SMALL, ReplayMarketData())
    job = clm.job_spec("real", ms("2023-06-01"))
    assert job["min_confidence"] == default_min_confidence("NORMAL")
    pool = spawn_pool()
    try:
        summary = await asyncio.get_running_loop().run_in_executor(pool, run_training_job, job)
    finally:
        await asyncio.to_thread(pool.shutdown)
    assert summary["pid"] != os.getpid()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary["versions"]) == set(summary["decisions"]) == KINDS
    assert summary["data_until_ms"] == ms("2023-06-01") and summary["train_rows"] > summary["test_rows"] > 0
    for kind in KINDS:  # scored with the served rule
        assert set(summary["report"][kind]) == set(MODEL_METRICS)
    engine = create_engine(settings.database_url)
    try:
        registry = ModelRegistry(create_sessionmaker(engine), EventBus(), tmp_path / "models")
        versions, total = await registry.list(limit=50)
        _, decided = await registry.promotions(limit=50)
    finally:
        await engine.dispose()
    assert total == 5 and decided == 5
    assert {str(v.id) for v in versions} == set(summary["versions"].values())
    assert all(Path(v.artifact_path).is_relative_to((tmp_path / "models").resolve()) for v in versions)


async def test_event_loop_stays_responsive_while_training(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The issue's "show it": loop lag, sampled every 10 ms for as long as a real job trains."""
    require_market_data()
    settings = make_settings(model_dir=str(tmp_path / "models"))
    clm = ContinuousLearning(settings, SMALL, ReplayMarketData())
    try:
        await clm.retrain("loop lag", "pytest")
        lags: list[float] = []
        window_started = time.perf_counter()
        while clm.running:
            assert time.perf_counter() - window_started < 60, "the training job took over 60 s"
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)
        window = time.perf_counter() - window_started
    finally:
        await clm.stop()
    last = clm.status()["last"]
    assert last["ok"] is True, last["error"]
    summary = last["summary"]
    assert summary["pid"] != os.getpid() and set(summary["versions"]) == KINDS
    # The samples cover the whole job: the child trained for summary["duration_s"] inside the window.
    assert window >= summary["duration_s"] > 1.0 and len(lags) >= 100
    ordered = sorted(lags)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"\nloop lag over {len(lags)} samples during a {last['duration_s']:.1f} s job "
        f"(child trained {summary['duration_s']:.1f} s): "
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )
    assert p99 < 0.050 and ordered[-1] < 0.200


async def test_stop_kills_a_real_training_process(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Shutdown does not wait minutes for a training run: after the grace period the child is killed."""
    require_market_data()
    settings = make_settings(model_dir=str(tmp_path / "models"))
    clm = ContinuousLearning(
        settings, ClmConfig(symbols=("BTC/USDT:USDT",)), ReplayMarketData(), stop_grace_seconds=0.5
    )
    await clm.retrain("killed by stop", "pytest")
    deadline = time.monotonic() + 10
    while not multiprocessing.active_children():
        assert time.monotonic() < deadline, "no training process was started"
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    await clm.stop()
    assert time.perf_counter() - started < 3
    last = clm.status()["last"]
    assert last["ok"] is False and last["error"]["type"] == "Cancelled"
    deadline = time.monotonic() + 5
    while multiprocessing.active_children():
        assert time.monotonic() < deadline, multiprocessing.active_children()
        await asyncio.sleep(0.05)
