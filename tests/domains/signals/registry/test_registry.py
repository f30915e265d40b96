"""ModelRegistry on a migrated database: registration, promotion decisions, audit, events, retention."""

import asyncio
import hashlib
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.bus import EventBus
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import Conflict, NotFound
from app.core.settings import Settings
from app.domains.learning.backtest import TradeRule, score_probabilities, symbol_market
from app.domains.learning.dataset import SymbolRows
from app.domains.markets.candles import Candles
from app.domains.signals.labels import UNKNOWN, direction_labels
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.repository import RegistryRepository
from app.domains.signals.registry.service import ModelRegistry, code_version
from tests.support import EventRecorder, FakeClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TRAIN = (T0, T0 + timedelta(days=300))
TEST = (T0 + timedelta(days=301), T0 + timedelta(days=330))
WINDOW = (T0 + timedelta(days=331), T0 + timedelta(days=360))
BASELINE = {"log_loss": 1.0986, "net_return": 0.0}
GOOD = {"log_loss": 1.0, "net_return": 0.03}


def labelled_rows(symbol: str, timestamp: np.ndarray, y: np.ndarray) -> SymbolRows:
    """Rows carrying only what the served-rule evaluation reads (times, labels); the model inputs are zeros."""
    n = len(y)
    z = np.zeros(n)
    return SymbolRows(
        symbol, timestamp, np.zeros((n, 1)), np.zeros((n, 1, 1)), y, np.zeros((n, 1)), z, z, np.zeros(n, dtype=np.int64)
    )


def on_disk(path: str) -> bool:
    return Path(path).is_dir()


@dataclass
class Harness:
    registry: ModelRegistry
    sessions: async_sessionmaker[AsyncSession]
    bus: EventBus
    events: EventRecorder
    clock: FakeClock
    model_dir: Path
    make: Callable[..., ModelRegistry]

    async def register(self, name: str, kind: str = "xgboost", **overrides: Any) -> ModelVersion:
        """A saved artifact (one weights file) registered as a candidate; the clock moves on after."""
        directory = self.model_dir / kind / name
        directory.mkdir(parents=True)
        weights = directory / "model.ubj"
        weights.write_bytes(name.encode())
        values: dict[str, Any] = {
            "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
            "timeframe": "1h",
            "train_start": TRAIN[0],
            "train_end": TRAIN[1],
            "test_start": TEST[0],
            "test_end": TEST[1],
            "features": ["rsi_14", "atr_14"],
            "code_version": "abc1234",
            "hyperparameters": {"max_depth": 4, "eta": 0.05},
            "metrics": {"log_loss": 1.01, "net_return": 0.02, "accuracy": 0.41},
            "artifact_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        }
        values.update(overrides)
        version = await self.registry.register(kind, directory, **values)
        self.clock.advance(minutes=1)
        return version

    async def decide(self, version: ModelVersion, metrics: dict[str, float], champion: dict[str, float] | None) -> Any:
        return await self.registry.decide(
            version.id, metrics, champion, BASELINE, *WINDOW, PromotionMargins(log_loss=0.002, net_return=0.0)
        )

    async def published(self) -> list[ModelPromoted]:
        await self.bus.drain()
        return list(self.events.of(ModelPromoted))


async def _harness(url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    engine: AsyncEngine = create_engine(Settings(_env_file=None, database_url=url).database_url)  # type: ignore[call-arg]
    sessions = create_sessionmaker(engine)
    bus = EventBus()
    events = EventRecorder()
    bus.subscribe(ModelPromoted, events.record)
    clock = FakeClock(datetime(2025, 6, 1, tzinfo=UTC))
    model_dir = tmp_path / "models"
    model_dir.mkdir()

    def make(**kwargs: Any) -> ModelRegistry:
        return ModelRegistry(sessions, bus, model_dir, clock=clock, **kwargs)

    try:
        yield Harness(make(), sessions, bus, events, clock, model_dir, make)
    finally:
        await bus.drain()
        await engine.dispose()


@pytest.fixture
async def harness(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(sqlite_url, tmp_path):
        yield h


# Registration -------------------------------------------------------------------------


async def test_register_then_get_and_list(harness: Harness) -> None:
    first = await harness.register("a")
    second = await harness.register("b", kind="lightgbm")
    third = await harness.register("c")

    stored = await harness.registry.get(first.id)
    assert stored.status == "candidate"
    assert stored.kind == "xgboost"
    assert stored.symbols == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert stored.features == ["rsi_14", "atr_14"]
    assert stored.hyperparameters == {"max_depth": 4, "eta": 0.05}
    assert stored.metrics == {"log_loss": 1.01, "net_return": 0.02, "accuracy": 0.41}
    assert (stored.train_start, stored.train_end, stored.test_start, stored.test_end) == (*TRAIN, *TEST)
    assert stored.train_start.tzinfo is not None
    assert stored.artifact_path == str((harness.model_dir / "xgboost" / "a").resolve())
    assert stored.artifact_sha256 == hashlib.sha256(b"a").hexdigest()
    assert stored.promoted_at is None and stored.retired_at is None

    versions, total = await harness.registry.list()
    assert total == 3
    assert [v.id for v in versions] == [third.id, second.id, first.id]
    versions, total = await harness.registry.list(kind="xgboost", limit=1, offset=1)
    assert total == 2 and [v.id for v in versions] == [first.id]
    versions, total = await harness.registry.list(status="champion")
    assert (versions, total) == ([], 0)
    assert await harness.registry.champion("xgboost") is None


async def test_get_unknown_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.registry.get(uuid.uuid4())


async def test_artifact_outside_model_dir_is_refused(harness: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    values = {
        "symbols": ["BTC/USDT:USDT"],
        "timeframe": "1h",
        "train_start": TRAIN[0],
        "train_end": TRAIN[1],
        "test_start": TEST[0],
        "test_end": TEST[1],
        "features": [],
        "code_version": "x",
        "hyperparameters": {},
        "metrics": {},
        "artifact_sha256": "0" * 64,
    }
    for directory in (outside, harness.model_dir, harness.model_dir / ".." / "elsewhere"):
        with pytest.raises(ValueError, match="not inside the model directory"):
            await harness.registry.register("xgboost", directory, **values)
    with pytest.raises(ValueError, match="does not exist"):
        await harness.registry.register("xgboost", harness.model_dir / "missing", **values)
    assert (await harness.registry.list())[1] == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "random_forest"}, "unknown model kind"),
        ({"artifact_sha256": "not-a-digest"}, "64 hex digits"),
        ({"test_start": TRAIN[1] - timedelta(hours=1)}, "train_end <= test_start"),
    ],
)
async def test_register_validates(harness: Harness, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await harness.register("bad", **overrides)


def test_code_version_is_never_empty() -> None:
    version = code_version()
    assert version and len(version) <= 64


# Promotion ----------------------------------------------------------------------------


async def test_first_candidate_must_beat_the_baseline(harness: Harness) -> None:
    candidate = await harness.register("a")
    decision = await harness.decide(candidate, GOOD, None)

    assert decision.promoted and decision.champion_id == candidate.id and decision.previous_champion_id is None
    assert "vs baseline 1.0986" in decision.reason
    champion = await harness.registry.champion("xgboost")
    assert champion is not None and champion.id == candidate.id
    assert champion.status == "champion" and champion.promoted_at == harness.clock.now
    [record], _ = await harness.registry.promotions()
    assert record.promoted and record.champion_id is None and record.champion_metrics is None
    assert (record.window_start, record.window_end) == WINDOW
    [event] = await harness.published()
    assert event.promoted and event.previous_champion_id is None and event.candidate_id == str(candidate.id)


async def test_promotion_replaces_the_champion(harness: Harness) -> None:
    old = await harness.register("old")
    await harness.decide(old, GOOD, None)
    new = await harness.register("new")
    champion_on_window = {"log_loss": 0.95, "net_return": 0.01}
    decision = await harness.decide(new, {"log_loss": 0.94, "net_return": 0.02}, champion_on_window)

    assert decision.promoted, decision.reason
    assert decision.champion_id == new.id and decision.previous_champion_id == old.id
    retired = await harness.registry.get(old.id)
    assert retired.status == "retired" and retired.retired_at == harness.clock.now
    assert (await harness.registry.get(new.id)).status == "champion"
    assert (await harness.registry.list(status="champion"))[1] == 1

    records, total = await harness.registry.promotions(kind="xgboost")
    assert total == 2
    latest = records[0]
    assert latest.promoted and latest.candidate_id == new.id and latest.champion_id == old.id
    assert latest.champion_metrics == champion_on_window
    assert latest.reason == decision.reason
    events = await harness.published()
    assert [(e.promoted, e.previous_champion_id) for e in events] == [(True, None), (True, str(old.id))]
    assert events[1].kind == "xgboost" and events[1].reason == decision.reason


async def test_rejected_candidate_stays_candidate(harness: Harness) -> None:
    champion = await harness.register("champ")
    await harness.decide(champion, GOOD, None)
    candidate = await harness.register("cand")
    # Better log loss, worse economics after fees: not promoted.
    decision = await harness.decide(
        candidate, {"log_loss": 0.90, "net_return": -0.01}, {"log_loss": 0.95, "net_return": 0.01}
    )

    assert not decision.promoted
    assert decision.champion_id == champion.id and decision.previous_champion_id == champion.id
    assert "net_return -0.0100 vs champion 0.0100 (needs >= 0.0100): worse" in decision.reason
    assert (await harness.registry.get(candidate.id)).status == "candidate"
    assert (await harness.registry.get(champion.id)).status == "champion"
    [record, _], _ = await harness.registry.promotions()
    assert not record.promoted and record.candidate_id == candidate.id and record.champion_id == champion.id
    events = await harness.published()
    assert not events[-1].promoted and events[-1].previous_champion_id == str(champion.id)


async def test_nan_metrics_are_rejected_and_audited(harness: Harness) -> None:
    candidate = await harness.register("nan", metrics={"log_loss": math.nan, "net_return": 0.0})
    assert (await harness.registry.get(candidate.id)).metrics == {"log_loss": None, "net_return": 0.0}
    decision = await harness.decide(candidate, {"log_loss": math.nan, "net_return": 0.5}, None)

    assert not decision.promoted and "NaN" in decision.reason
    [record], _ = await harness.registry.promotions()
    assert not record.promoted and record.candidate_metrics == {"log_loss": None, "net_return": 0.5}
    assert [e.promoted for e in await harness.published()] == [False]


async def test_decide_refuses_what_it_cannot_compare(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.registry.decide(uuid.uuid4(), GOOD, None, BASELINE, *WINDOW)
    champion = await harness.register("champ")
    await harness.decide(champion, GOOD, None)
    with pytest.raises(Conflict, match="not a candidate"):
        await harness.decide(champion, GOOD, GOOD)
    candidate = await harness.register("cand")
    with pytest.raises(Conflict, match="metrics on the window are needed"):
        await harness.decide(candidate, GOOD, None)
    with pytest.raises(ValueError, match="not out of sample"):
        await harness.registry.decide(candidate.id, GOOD, GOOD, BASELINE, TRAIN[1] - timedelta(days=1), WINDOW[1])
    with pytest.raises(ValueError, match="empty window"):
        await harness.registry.decide(candidate.id, GOOD, GOOD, BASELINE, WINDOW[1], WINDOW[0])
    other = await harness.register("other", kind="lightgbm")
    with pytest.raises(Conflict, match="no champion"):
        await harness.decide(other, GOOD, GOOD)

    assert (await harness.registry.promotions())[1] == 1
    assert (await harness.registry.get(candidate.id)).status == "candidate"
    assert len(await harness.published()) == 1


# Comparisons on a window neither model was trained on, scored with the served rule -----------------


def served_metrics(model: str) -> dict[str, float]:
    """Log loss and served-rule net return, on synthetic trending candles, of a model that calls each
    candle's label (0.8) or of one that calls the opposite direction."""
    rng = np.random.default_rng(1)
    n = 1200
    drift = np.repeat(rng.choice([-0.004, 0.004], size=n // 24), 24)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.002, n)))
    open_ = np.r_[100.0, close[:-1]]
    timestamp = np.arange(n, dtype=np.int64) * 3_600_000
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    candles = Candles("BTC/USDT:USDT", "1h", timestamp, open_, high, low, close, np.ones(n))
    y = direction_labels(close, 4, 0.002)
    keep = np.flatnonzero((np.arange(n) >= 200) & (y != UNKNOWN))
    rows = labelled_rows(candles.symbol, timestamp[keep], y[keep])
    called = rows.y if model == "right" else 2 - rows.y  # LONG <-> SHORT
    p = np.full((len(keep), 3), 0.1)
    p[np.arange(len(keep)), called] = 0.8
    market = symbol_market(candles, None, int(timestamp[200]), int(timestamp[-1]) + 1)
    metrics = score_probabilities(p, [market], rows, TradeRule())
    return {"log_loss": float(metrics["log_loss"] or math.nan), "net_return": float(metrics["net_return"] or 0.0)}


async def test_a_worse_candidate_is_not_promoted_and_a_better_one_is(harness: Harness) -> None:
    right, wrong = served_metrics("right"), served_metrics("wrong")
    assert right["net_return"] > 0 > wrong["net_return"] and right["log_loss"] < wrong["log_loss"]
    champion = await harness.register("champ")
    await harness.decide(champion, GOOD, None)
    worse = await harness.register("worse")
    decision = await harness.decide(worse, wrong, right)
    assert not decision.promoted and decision.champion_id == champion.id
    assert "worse" in decision.reason
    better = await harness.register("better")
    decision = await harness.decide(better, right, wrong)
    assert decision.promoted and decision.champion_id == better.id, decision.reason


async def test_a_champion_trained_inside_the_window_is_refused_as_a_comparison(harness: Harness) -> None:
    inside = WINDOW[0] + timedelta(days=5)
    champion = await harness.register(
        "champ", train_start=TRAIN[0], train_end=inside, test_start=inside, test_end=WINDOW[1]
    )
    await harness.registry.decide(champion.id, GOOD, None, BASELINE, inside, WINDOW[1])
    candidate = await harness.register("cand")

    # Even a far better candidate: the champion's numbers on this window would be in-sample.
    decision = await harness.decide(candidate, {"log_loss": 0.1, "net_return": 1.0}, None)

    assert not decision.promoted and decision.champion_id == champion.id
    assert decision.reason.startswith(f"comparison refused: champion {champion.id} was trained on")
    assert "not out of sample" in decision.reason
    assert (await harness.registry.get(candidate.id)).status == "candidate"
    assert (await harness.registry.get(champion.id)).status == "champion"
    record = (await harness.registry.promotions())[0][0]
    assert not record.promoted and record.reason == decision.reason and record.champion_metrics is None
    assert not (await harness.published())[-1].promoted


async def test_labels_that_look_into_the_window_count_as_training_on_it(harness: Harness) -> None:
    end = WINDOW[0] - timedelta(hours=2)
    hyper = {"training": {"horizon": 4}}  # each row's label is the close 4 candles later: up to WINDOW[0] + 2 h
    champion = await harness.register("champ", train_end=end, test_start=end, test_end=WINDOW[0], hyperparameters=hyper)
    with pytest.raises(ValueError, match=r"the candidate was trained on .* not out of sample"):
        await harness.registry.decide(champion.id, GOOD, None, BASELINE, *WINDOW)
    await harness.registry.decide(champion.id, GOOD, None, BASELINE, WINDOW[0] + timedelta(hours=2), WINDOW[1])
    assert (await harness.registry.get(champion.id)).status == "champion"

    candidate = await harness.register("cand")
    decision = await harness.decide(candidate, GOOD, None)
    assert not decision.promoted and decision.reason.startswith("comparison refused: champion")


# Refits -------------------------------------------------------------------------------

REFIT_END = WINDOW[1]  # the refit saw the promoting window too


async def register_refit(harness: Harness, name: str, of: ModelVersion, **overrides: Any) -> ModelVersion:
    directory = harness.model_dir / of.kind / name
    directory.mkdir(parents=True)
    (directory / "model.ubj").write_bytes(name.encode())
    values: dict[str, Any] = {
        "train_start": TRAIN[0],
        "train_end": REFIT_END,
        "code_version": "def5678",
        "hyperparameters": {"max_depth": 4},
        "artifact_sha256": hashlib.sha256(name.encode()).hexdigest(),
    }
    values.update(overrides)
    version = await harness.registry.register_refit(of.id, directory, **values)
    harness.clock.advance(minutes=1)
    return version


async def test_a_refit_of_the_champion_becomes_champion_with_its_evidence(harness: Harness) -> None:
    tested = await harness.register("tested")
    promotion = await harness.decide(tested, GOOD, None)
    assert promotion.promoted
    refit = await register_refit(harness, "refit", tested)
    assert refit.status == "candidate" and refit.kind == "xgboost"
    assert (refit.train_start, refit.train_end) == (TRAIN[0], REFIT_END)
    assert (refit.test_start, refit.test_end) == TEST and refit.metrics == tested.metrics
    assert refit.hyperparameters["refit_of"] == str(tested.id) and refit.hyperparameters["max_depth"] == 4
    evidence = refit.hyperparameters["evidence"]
    assert evidence["metrics"] == tested.metrics and evidence["reason"] == promotion.reason
    assert (evidence["window_start"], evidence["window_end"]) == (WINDOW[0].isoformat(), WINDOW[1].isoformat())
    assert evidence["train_end"] == TRAIN[1].isoformat()

    decision = await harness.registry.promote_refit(refit.id, tested.id)

    reason = f"refit of {tested.id} on data to {REFIT_END:%Y-%m-%d %H:%M}"
    assert decision.promoted and decision.reason == reason
    assert decision.champion_id == refit.id and decision.previous_champion_id == tested.id
    assert (await harness.registry.champion("xgboost")).id == refit.id  # type: ignore[union-attr]
    assert (await harness.registry.get(tested.id)).status == "retired"
    records, total = await harness.registry.promotions(kind="xgboost")
    assert total == 2  # the audit shows both steps: the gate's promotion, then the refit
    assert [(r.candidate_id, r.champion_id, r.promoted) for r in records] == [
        (refit.id, tested.id, True),
        (tested.id, None, True),
    ]
    assert records[0].reason == reason and records[0].candidate_metrics == tested.metrics
    assert (records[0].window_start, records[0].window_end) == TEST
    events = await harness.published()
    assert [(e.candidate_id, e.previous_champion_id, e.promoted) for e in events] == [
        (str(tested.id), None, True),
        (str(refit.id), str(tested.id), True),
    ]
    assert events[1].reason == reason
    with pytest.raises(Conflict, match="not a candidate"):
        await harness.registry.promote_refit(refit.id, tested.id)


async def test_promote_refit_refuses_unless_it_refits_the_current_champion_of_its_kind(harness: Harness) -> None:
    first = await harness.register("first")
    await harness.decide(first, GOOD, None)
    refit = await register_refit(harness, "refit-first", first)
    second = await harness.register("second")
    assert (await harness.decide(second, {"log_loss": 0.9, "net_return": 0.05}, GOOD)).promoted
    other = await harness.register("other", kind="lightgbm")
    await harness.decide(other, GOOD, None)
    other_refit = await register_refit(harness, "refit-other", other)
    before = (await harness.registry.promotions())[1], len(await harness.published())

    with pytest.raises(Conflict, match=f"{first.id} is no longer the xgboost champion"):
        await harness.registry.promote_refit(refit.id, first.id)
    with pytest.raises(Conflict, match="is a lightgbm"):
        await harness.registry.promote_refit(other_refit.id, second.id)
    with pytest.raises(Conflict, match=f"is not a refit of {second.id}"):
        await harness.registry.promote_refit(refit.id, second.id)
    with pytest.raises(NotFound):
        await harness.registry.promote_refit(uuid.uuid4(), second.id)
    # a refit recorded with an earlier training end than its champion's (only possible by editing the row)
    early = await register_refit(harness, "refit-second", second)
    async with harness.sessions() as session, session.begin():
        await session.execute(
            update(ModelVersion).where(ModelVersion.id == early.id).values(train_end=TRAIN[1] - timedelta(days=1))
        )
    with pytest.raises(Conflict, match="before the champion's"):
        await harness.registry.promote_refit(early.id, second.id)

    assert (await harness.registry.champion("xgboost")).id == second.id  # type: ignore[union-attr]
    assert (await harness.registry.champion("lightgbm")).id == other.id  # type: ignore[union-attr]
    assert ((await harness.registry.promotions())[1], len(await harness.published())) == before


async def test_register_refit_needs_a_promoted_version_and_data_to_at_least_its_end(harness: Harness) -> None:
    kept = await harness.register("kept")
    with pytest.raises(Conflict, match="never promoted"):
        await register_refit(harness, "refit-kept", kept)
    values: dict[str, Any] = {
        "train_start": TRAIN[0],
        "train_end": REFIT_END,
        "code_version": "x",
        "hyperparameters": {},
        "artifact_sha256": "0" * 64,
    }
    with pytest.raises(NotFound):
        await harness.registry.register_refit(uuid.uuid4(), harness.model_dir / "xgboost" / "kept", **values)
    await harness.decide(kept, GOOD, None)
    with pytest.raises(ValueError, match="ending at or after"):
        await register_refit(harness, "refit-short", kept, train_end=TRAIN[1] - timedelta(hours=1))
    with pytest.raises(ValueError, match="not inside the model directory"):
        await harness.registry.register_refit(kept.id, harness.model_dir / "..", **values)
    assert (await harness.registry.list())[1] == 1


async def test_a_refit_champion_is_not_compared_on_a_window_it_was_trained_on(harness: Harness) -> None:
    tested = await harness.register("tested")
    await harness.decide(tested, GOOD, None)
    refit = await register_refit(harness, "refit", tested)
    await harness.registry.promote_refit(refit.id, tested.id)
    later = (WINDOW[1] - timedelta(days=10), WINDOW[1] + timedelta(days=20))  # overlaps the refit's data
    candidate = await harness.register(
        "next", train_end=later[0] - timedelta(days=1), test_start=later[0], test_end=later[1]
    )

    decision = await harness.registry.decide(candidate.id, {"log_loss": 0.1, "net_return": 1.0}, None, BASELINE, *later)

    assert not decision.promoted and decision.champion_id == refit.id
    assert decision.reason.startswith(f"comparison refused: champion {refit.id} was trained on")
    assert "not out of sample" in decision.reason
    # the tested version, trained to TRAIN[1], could have been compared there
    assert later[0] > TRAIN[1]


# Retention ----------------------------------------------------------------------------


async def test_retention_keeps_the_champion_and_the_newest_candidates(harness: Harness, tmp_path: Path) -> None:
    registry = harness.registry = harness.make(keep_candidates=2)
    champion = await harness.register("champ")
    await harness.decide(champion, GOOD, None)
    c1, c2, c3 = [await harness.register(name) for name in ("c1", "c2", "c3")]
    other_kind = await harness.register("lgb", kind="lightgbm")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the registry's")
    sneaky = await harness.register("sneaky")
    async with harness.sessions() as session, session.begin():
        await session.execute(
            update(ModelVersion).where(ModelVersion.id == sneaky.id).values(artifact_path=str(outside))
        )
    c4 = await harness.register("c4")

    decision = await harness.decide(c4, {"log_loss": 1.2, "net_return": -0.5}, GOOD)

    assert not decision.promoted
    assert set(decision.retired) == {c1.id, c2.id, c3.id}
    statuses = {v.id: v.status for v in (await registry.list(limit=100))[0]}
    assert statuses[champion.id] == "champion"
    assert statuses[c4.id] == statuses[sneaky.id] == "candidate"
    assert statuses[c1.id] == statuses[c2.id] == statuses[c3.id] == "retired"
    assert statuses[other_kind.id] == "candidate"
    for gone in (c1, c2, c3):
        assert not on_disk(gone.artifact_path)
        assert (await registry.get(gone.id)).retired_at == harness.clock.now
        assert (await registry.get(gone.id)).artifact_path == gone.artifact_path
    for kept in (champion, c4, other_kind):
        assert on_disk(kept.artifact_path)

    # The version pointing outside model_dir is retired by the next decision, its files untouched.
    c5 = await harness.register("c5")
    decision = await harness.decide(c5, {"log_loss": 1.2, "net_return": -0.5}, GOOD)
    assert decision.retired == (sneaky.id,)
    assert (outside / "keep.txt").read_text() == "not the registry's"
    assert on_disk(str(harness.model_dir)) and on_disk(champion.artifact_path)
    assert await registry.apply_retention("xgboost") == []


async def test_retention_deletes_the_retired_champions_artifact(harness: Harness) -> None:
    harness.registry = harness.make(keep_candidates=1)
    old = await harness.register("old")
    await harness.decide(old, GOOD, None)
    new = await harness.register("new")
    decision = await harness.decide(new, {"log_loss": 0.5, "net_return": 0.1}, GOOD)

    assert decision.promoted and decision.retired == ()
    assert not on_disk(old.artifact_path)
    assert on_disk(new.artifact_path)
    assert (await harness.registry.get(old.id)).status == "retired"


async def assert_one_champion_per_kind(harness: Harness, candidate: ModelVersion) -> None:
    """The database itself refuses a second champion of a kind."""
    with pytest.raises(IntegrityError):
        async with harness.sessions() as session, session.begin():
            await RegistryRepository(session).set_status([candidate.id], "champion", harness.clock.now)
    assert (await harness.registry.get(candidate.id)).status == "candidate"


async def test_one_champion_per_kind_in_the_database(harness: Harness) -> None:
    champion = await harness.register("champ")
    await harness.decide(champion, GOOD, None)
    await assert_one_champion_per_kind(harness, await harness.register("cand"))


def test_keep_candidates_must_not_be_negative(harness: Harness) -> None:
    with pytest.raises(ValueError, match="keep_candidates"):
        harness.make(keep_candidates=-1)


# PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
async def test_register_and_decide_on_postgres(pg_url: str, tmp_path: Path) -> None:
    async for harness in _harness(pg_url, tmp_path):
        first = await harness.register("first", metrics={"log_loss": math.inf, "net_return": 0.0})
        decision = await harness.decide(first, GOOD, None)
        assert decision.promoted
        nan = await harness.register("nan")
        rejected = await harness.decide(nan, {"log_loss": math.nan, "net_return": 1.0}, GOOD)
        assert not rejected.promoted

        # Two promotions racing: exactly one wins (Conflict, or the unique index, stops the other).
        a = await harness.register("a", kind="nhits")
        b = await harness.register("b", kind="nhits")
        outcomes = await asyncio.gather(
            harness.decide(a, GOOD, None), harness.decide(b, GOOD, None), return_exceptions=True
        )
        assert sum(1 for o in outcomes if isinstance(o, BaseException)) == 1
        assert (await harness.registry.list(kind="nhits", status="champion"))[1] == 1
        await assert_one_champion_per_kind(harness, b if isinstance(outcomes[1], BaseException) else a)

        champion = await harness.registry.champion("xgboost")
        assert champion is not None and champion.id == first.id and champion.metrics["log_loss"] is None
        records, total = await harness.registry.promotions(kind="xgboost")
        assert total == 2 and [r.promoted for r in records] == [False, True]
        assert records[0].candidate_metrics == {"log_loss": None, "net_return": 1.0}
        assert [e.promoted for e in await harness.published()] == [True, False, True]


@pytest.mark.postgres
async def test_refit_promotion_on_postgres(pg_url: str, tmp_path: Path) -> None:
    async for harness in _harness(pg_url, tmp_path):
        tested = await harness.register("tested")
        await harness.decide(tested, GOOD, None)
        refit = await register_refit(harness, "refit", tested)
        stale = await register_refit(harness, "stale", tested)
        outcomes = await asyncio.gather(
            harness.registry.promote_refit(refit.id, tested.id),
            harness.registry.promote_refit(stale.id, tested.id),
            return_exceptions=True,
        )
        # Two refits of one champion racing: one wins, the other finds it no longer the champion.
        assert sum(1 for o in outcomes if isinstance(o, Conflict)) == 1, outcomes
        winner = refit if not isinstance(outcomes[0], BaseException) else stale
        assert (await harness.registry.champion("xgboost")).id == winner.id  # type: ignore[union-attr]
        records, total = await harness.registry.promotions(kind="xgboost")
        assert total == 2 and records[0].reason == f"refit of {tested.id} on data to {REFIT_END:%Y-%m-%d %H:%M}"
        assert records[0].candidate_metrics == tested.metrics
        await assert_one_champion_per_kind(harness, stale if winner is refit else refit)
