"""Continuous learning (CLM): retrain on a schedule and on demand, never on the event loop.

A training run is minutes of CPU (torch, XGBoost, LightGBM). Run in the API process it would
stall every request, so a job runs in a one-worker process pool ("spawn": the child shares no
event loop, sockets or database connections with the API), at a lower CPU priority and with one
torch thread; the event loop only awaits the job's future. The child registers the versions and
runs the promotion gate itself; the API process then re-publishes `ModelPromoted` on its own bus,
so the signal service picks up a new champion.

Candidates and champions are scored with the served rule (`backtest`, through the pipeline), with the
minimum confidence of the risk profile the service starts in (`QUANTUM_RISK_MODE`).

One job at a time: per process by state, and per host by an exclusive lock file in `model_dir`,
so several uvicorn workers never train at once.
"""

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from app.core.bus import EventBus
from app.core.clock import utcnow
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import Conflict, ServiceUnavailable
from app.core.settings import Settings
from app.domains.learning.backtest import default_min_confidence
from app.domains.learning.pipeline import TrainPlan, default_rule, train_and_promote
from app.domains.markets.marketdata import MarketData, MarketDataError, ReplayMarketData
from app.domains.signals.modelset import TrainingConfig
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.service import ModelRegistry, json_safe

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
JobFunction = Callable[[dict[str, Any]], dict[str, Any]]
ExecutorFactory = Callable[[], Executor]

LOCK_FILE = ".clm.lock"
JOB_NICENESS = 10  # the API process keeps priority when both want the CPU


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _ms_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


@dataclass(frozen=True)
class ClmConfig:
    """What to train and when; the defaults match `python -m app train`."""

    symbols: tuple[str, ...] = ("BTC/USDT:USDT", "ETH/USDT:USDT")
    timeframe: str = "1h"
    interval_seconds: float = 86400.0
    min_new_samples: int = 24
    """New candles per symbol since the last run's data end before the schedule retrains."""
    train_days: int = 730
    test_days: int = 180
    enabled: bool = False
    """The schedule; on-demand retraining works either way."""
    torch_epochs: int | None = None
    """None: the TrainingConfig default."""

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("ClmConfig.symbols must name at least one symbol")
        if not self.interval_seconds > 0:
            raise ValueError(f"interval_seconds must be > 0, got {self.interval_seconds}")
        if self.min_new_samples < 0 or self.train_days < 1 or self.test_days < 1:
            raise ValueError("min_new_samples must be >= 0, train_days and test_days >= 1")
        if self.torch_epochs is not None and self.torch_epochs < 1:
            raise ValueError(f"torch_epochs must be >= 1, got {self.torch_epochs}")


# --- the job, in the child process -------------------------------------------------------------


def _child_limits() -> None:
    """One torch thread and a lower priority, so the API process keeps a core."""
    torch.set_num_threads(1)
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(current, JOB_NICENESS))


def run_training_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train, register and gate in this (child) process; a JSON-safe summary.

    Module-level and fed plain values only, so it pickles into a "spawn" worker: the child
    builds its own engine, registry and market data from `job`.
    """
    _child_limits()
    Path(job["model_dir"]).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_train(job))


async def _train(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    model_dir = Path(job["model_dir"])
    epochs = job.get("torch_epochs")
    config = TrainingConfig() if epochs is None else TrainingConfig(torch_epochs=int(epochs))
    plan = TrainPlan(
        tuple(job["symbols"]), int(job["until_ms"]), job["timeframe"], int(job["train_days"]), int(job["test_days"])
    )
    margins = PromotionMargins(float(job["margins"]["log_loss"]), float(job["margins"]["net_return"]))
    market_dir = job.get("market_data_dir")
    engine = create_engine(job["database_url"], **job.get("db_engine_options", {}))
    try:
        registry = ModelRegistry(
            create_sessionmaker(engine), EventBus(), model_dir, keep_candidates=int(job["keep_candidates"])
        )
        market = ReplayMarketData(Path(market_dir) if market_dir else None)
        min_confidence = job.get("min_confidence")
        rule = default_rule(config, None if min_confidence is None else float(min_confidence))
        outcome = await train_and_promote(market, registry, model_dir, plan, config, margins, rule)
    finally:
        await engine.dispose()
    summary = {
        "versions": {kind: str(version.id) for kind, version in outcome.versions.items()},
        "decisions": {
            kind: {
                "promoted": d.promoted,
                "reason": d.reason,
                "champion_id": str(d.champion_id) if d.champion_id else None,
                "previous_champion_id": str(d.previous_champion_id) if d.previous_champion_id else None,
            }
            for kind, d in outcome.decisions.items()
        },
        "refits": {
            kind: {"id": str(d.candidate_id), "refit_of": str(d.previous_champion_id), "reason": d.reason}
            for kind, d in outcome.refit_decisions.items()
        },
        "refit_skipped": outcome.refit_skipped,
        "report": outcome.report,
        "fit_seconds": outcome.fit_seconds,
        "train_rows": outcome.train_rows,
        "test_rows": outcome.test_rows,
        "data_until_ms": plan.until_ms,
        "duration_s": round(time.perf_counter() - started, 3),
        "pid": os.getpid(),
    }
    result: dict[str, Any] = json_safe(summary)
    return result


def spawn_pool() -> Executor:
    """One worker, started by "spawn": a fork would copy the loop, sockets and engine of the API."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def _terminate_workers(executor: Executor) -> None:
    """Kill a process pool's workers: a training run cannot be interrupted politely, and waiting
    would hold the shutdown up for minutes. Registry writes are transactions, so nothing half-done
    is committed; at most an unregistered artifact directory stays behind."""
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):
            process.terminate()


# --- the host lock ------------------------------------------------------------------------------


class _HostLock:
    """An exclusive, non-blocking `flock` on a file: one training job per host, whichever process asks.

    The kernel releases it when the holder dies, so a crash never leaves it stale.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# --- the service in the API process -------------------------------------------------------------


@dataclass
class _Job:
    id: str
    trigger: str
    reason: str
    actor: str
    started_at: datetime
    started: float
    data_until_ms: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "reason": self.reason,
            "actor": self.actor,
            "started_at": _iso(self.started_at),
            "data_until": _ms_iso(self.data_until_ms) if self.data_until_ms is not None else None,
        }


class ContinuousLearning:
    """Starts training jobs (on demand or by schedule) in a process pool and reports on them.

    The API never awaits a training run: `retrain` returns once the job is submitted, and the
    job's result (or error) lands in `status()`. A failed job is recorded, never raised.
    """

    def __init__(
        self,
        settings: Settings,
        config: ClmConfig,
        market: MarketData,
        executor_factory: ExecutorFactory = spawn_pool,
        clock: Clock = utcnow,
        *,
        registry: ModelRegistry | None = None,
        bus: EventBus | None = None,
        job: JobFunction = run_training_job,
        stop_grace_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.config = config
        self._market = market
        self._executor_factory = executor_factory
        self._clock = clock
        self._registry = registry
        self._bus = bus
        self._job_function = job
        self._stop_grace = stop_grace_seconds
        self.model_dir = Path(settings.model_dir).resolve()
        self._lock = _HostLock(self.model_dir / LOCK_FILE)
        self._current: _Job | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: Executor | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._last: dict[str, Any] | None = None
        self._last_check: dict[str, Any] | None = None
        self._last_data_until_ms: int | None = None
        self._next_run_at: datetime | None = None
        self._stopped = False

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the schedule if it is enabled (on-demand jobs need no start)."""
        if self.config.enabled and self._scheduler is None and not self._stopped:
            self._next_run_at = self._clock() + timedelta(seconds=self.config.interval_seconds)
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name="clm-scheduler")

    async def stop(self) -> None:
        """Stop the schedule; give a running job `stop_grace_seconds`, then kill it. Idempotent."""
        self._stopped = True
        self._next_run_at = None
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
            self._scheduler = None
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self._stop_grace)
        if not done:
            if self._executor is not None:
                _terminate_workers(self._executor)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # Commands -------------------------------------------------------------------------------

    async def retrain(self, reason: str, actor: str) -> dict[str, Any]:
        """Start a job now, whatever the number of new samples; the job as `status()` shows it.

        Conflict if a job runs (here or in another process on this host); ServiceUnavailable if
        the service is stopped or the market data cannot say where the data ends.
        """
        job = await self._reserve("manual", reason, actor)
        try:
            until = await self._data_end()
        except MarketDataError as exc:
            self._release()
            logger.error("clm_market_data_unavailable", extra={"error": str(exc)[:300]})
            raise ServiceUnavailable("market data unavailable, no job started (see the service log)") from exc
        except BaseException:
            self._release()
            raise
        self._launch(job, until)
        return job.public()

    async def check(self) -> dict[str, Any]:
        """One scheduler tick: start a job if every symbol has `min_new_samples` new candles.

        Returns (and keeps for `status()`) what was decided and why.
        """
        record: dict[str, Any] = {
            "at": _iso(self._clock()),
            "new_samples": None,
            "min_new_samples": self.config.min_new_samples,
            "started_job_id": None,
            "skipped": None,
        }
        self._last_check = record
        if self._current is not None:
            record["skipped"] = f"job {self._current.id} is running"
            return record
        try:
            until = await self._data_end()
            since = await self._previous_data_end()
            new = None if since is None else await self._new_samples(since, until)
        except MarketDataError as exc:
            record["skipped"] = f"market data unavailable: {exc}"
            logger.warning("clm_check_failed", extra={"error": str(exc)})
            return record
        record["new_samples"] = new
        if new is not None and new < self.config.min_new_samples:
            record["skipped"] = f"{new} new samples < {self.config.min_new_samples}"
            return record
        why = "no previous run" if new is None else f"{new} new samples >= {self.config.min_new_samples}"
        try:
            job = await self._reserve("schedule", f"schedule: {why}", "scheduler")
        except (Conflict, ServiceUnavailable) as exc:
            record["skipped"] = exc.detail
            return record
        self._launch(job, until)
        record["started_job_id"] = job.id
        return record

    # Queries --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._current is not None

    def status(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["symbols"] = list(self.config.symbols)
        return {
            "running": self._current is not None,
            "current": self._current.public() if self._current is not None else None,
            "last": self._last,
            "last_check": self._last_check,
            "next_run_at": _iso(self._next_run_at) if self._scheduler is not None else None,
            "config": config,
        }

    # Internals ------------------------------------------------------------------------------

    async def _reserve(self, trigger: str, reason: str, actor: str) -> _Job:
        """Claim the single job slot before the first await, so two callers cannot both get it."""
        if self._stopped:
            raise ServiceUnavailable("continuous learning is stopped")
        if self._current is not None:
            raise Conflict(f"training job {self._current.id} is running", job=self._current.public())
        job = _Job(uuid.uuid4().hex[:12], trigger, reason, actor, self._clock(), time.perf_counter())
        self._current = job
        try:
            locked = await asyncio.to_thread(self._lock.acquire)
        except BaseException:
            self._current = None
            raise
        if not locked:
            self._current = None
            raise Conflict(f"a training job is running in another process on this host (lock {self._lock.path})")
        return job

    def _release(self) -> None:
        self._current = None
        self._lock.release()

    def _launch(self, job: _Job, until_ms: int) -> None:
        job.data_until_ms = until_ms
        self._task = asyncio.get_running_loop().create_task(self._run(job, until_ms), name=f"clm-job-{job.id}")
        logger.info(
            "clm_job_started",
            extra={"job_id": job.id, "trigger": job.trigger, "actor": job.actor, "data_until_ms": until_ms},
        )

    def job_spec(self, job_id: str, until_ms: int) -> dict[str, Any]:
        """The plain, picklable inputs of `run_training_job` (the child reads no Settings)."""
        s = self.settings
        return {
            "job_id": job_id,
            "database_url": s.database_url,
            "db_engine_options": s.db_engine_options(),
            "model_dir": str(self.model_dir),
            "market_data_dir": str(Path(s.market_data_dir).resolve()) if s.market_data_dir else None,
            "keep_candidates": s.model_keep_candidates,
            "margins": {"log_loss": s.promotion_margin_log_loss, "net_return": s.promotion_margin_net_return},
            "symbols": list(self.config.symbols),
            "timeframe": self.config.timeframe,
            "until_ms": until_ms,
            "train_days": self.config.train_days,
            "test_days": self.config.test_days,
            "torch_epochs": self.config.torch_epochs,
            "min_confidence": default_min_confidence(s.quantum_risk_mode),
        }

    async def _run(self, job: _Job, until_ms: int) -> None:
        summary: dict[str, Any] | None = None
        error: dict[str, str] | None = None
        executor = self._executor = self._executor_factory()
        try:
            loop = asyncio.get_running_loop()
            summary = await loop.run_in_executor(executor, self._job_function, self.job_spec(job.id, until_ms))
        except asyncio.CancelledError:
            error = {"type": "Cancelled", "message": "the job was stopped with the application"}
            raise
        except BrokenProcessPool as exc:
            error = {"type": type(exc).__name__, "message": f"the training process died: {exc}"}
        except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded, never raised into the app
            error = {"type": type(exc).__name__, "message": str(exc)[:2000]}
        finally:
            self._finish(job, summary, error)
            self._executor = None
            # Without waiting: the worker exits by itself once told, and the loop has nothing to join.
            executor.shutdown(wait=False, cancel_futures=True)
        if summary is not None:
            self._publish(summary)

    def _finish(self, job: _Job, summary: dict[str, Any] | None, error: dict[str, str] | None) -> None:
        duration = round(time.perf_counter() - job.started, 3)
        self._last = {
            **job.public(),
            "finished_at": _iso(self._clock()),
            "duration_s": duration,
            "ok": error is None,
            "error": error,
            "summary": summary,
        }
        if error is None:
            self._last_data_until_ms = job.data_until_ms
        self._release()
        self._task = None
        if error is None:
            logger.info("clm_job_finished", extra={"job_id": job.id, "duration_s": duration})
        else:
            logger.error(
                "clm_job_failed",
                extra={
                    "job_id": job.id,
                    "duration_s": duration,
                    "error_type": error["type"],
                    "error": error["message"],
                },
            )

    def _publish(self, summary: dict[str, Any]) -> None:
        """The child's bus dies with it: announce its decisions here, where the signal service listens."""
        if self._bus is None:
            return
        for kind, decision in summary.get("decisions", {}).items():
            self._bus.publish(
                ModelPromoted(
                    kind=kind,
                    candidate_id=summary["versions"][kind],
                    previous_champion_id=decision.get("previous_champion_id"),
                    promoted=bool(decision["promoted"]),
                    reason=decision["reason"],
                )
            )
        for kind, refit in summary.get("refits", {}).items():
            self._bus.publish(
                ModelPromoted(
                    kind=kind,
                    candidate_id=refit["id"],
                    previous_champion_id=refit["refit_of"],
                    promoted=True,
                    reason=refit["reason"],
                )
            )

    async def _data_end(self) -> int:
        """Exclusive end of the data every symbol has: the earliest newest candle + 1 ms."""
        ends = []
        for symbol in self.config.symbols:
            candles = await self._market.candles(symbol, self.config.timeframe)
            if len(candles) == 0:
                raise MarketDataError(f"no {self.config.timeframe} candles for {symbol}")
            ends.append(int(candles.timestamp[-1]) + 1)
        return min(ends)

    async def _previous_data_end(self) -> int | None:
        """The last successful run's data end: from this process, else the newest matching ensemble."""
        if self._last_data_until_ms is not None:
            return self._last_data_until_ms
        if self._registry is None:
            return None
        versions, _ = await self._registry.list(kind="ensemble", limit=20)
        for version in versions:
            if tuple(version.symbols) == self.config.symbols and version.timeframe == self.config.timeframe:
                end = version.test_end if version.test_end.tzinfo else version.test_end.replace(tzinfo=UTC)
                return int(end.timestamp() * 1000)
        return None

    async def _new_samples(self, since_ms: int, until_ms: int) -> int:
        """Fewest candles any symbol gained in [since_ms, until_ms)."""
        counts = []
        for symbol in self.config.symbols:
            counts.append(len(await self._market.candles(symbol, self.config.timeframe, since_ms, until_ms)))
        return min(counts)

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_seconds)
            try:
                await self.check()
            except Exception as exc:
                logger.exception("clm_check_failed")
                self._last_check = {
                    "at": _iso(self._clock()),
                    "new_samples": None,
                    "min_new_samples": self.config.min_new_samples,
                    "started_job_id": None,
                    "skipped": f"check failed: {type(exc).__name__}: {exc}",
                }
            self._next_run_at = self._clock() + timedelta(seconds=self.config.interval_seconds)
