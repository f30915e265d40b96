"""A training run end to end: versions, gate decisions, artifacts, and the CLI's evaluate."""

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.__main__ import main
from app.core.bus import EventBus
from app.core.clock import DAY_MS, HOUR_MS
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.domains.learning.backtest import MAX_HOLD_BARS, MODEL_METRICS, TRADING_METRICS
from app.domains.learning.dataset import split_by_time
from app.domains.learning.pipeline import (
    MIN_COMPARISON_DAYS,
    TrainPlan,
    comparison_start_ms,
    default_rule,
    load_rows,
    score_trained,
    score_version,
    served_metrics,
    train_and_promote,
    window_markets,
)
from app.domains.learning.training import predictions
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.signals.artifacts import load_ensemble, load_meta
from app.domains.signals.modelset import TrainingConfig
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.gate import PromotionMargins, promotion_gate
from app.domains.signals.registry.repository import RegistryRepository
from app.domains.signals.registry.service import ModelRegistry, PromotionDecision, label_reach
from app.domains.signals.service import SignalService
from tests.support import EventRecorder

KINDS = {"xgboost", "lightgbm", "nhits", "patchtst", "ensemble"}


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def test_train_register_and_gate(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz").exists():
        pytest.skip("!!! market data missing beside the repository")
    settings = make_settings()
    engine = create_engine(settings.database_url)
    registry = ModelRegistry(create_sessionmaker(engine), EventBus(), tmp_path / "models")
    (tmp_path / "models").mkdir()
    plan = TrainPlan(("BTC/USDT:USDT",), _ms("2023-06-01"), train_days=90, test_days=20)
    config = TrainingConfig(torch_epochs=1)
    outcome = await train_and_promote(
        ReplayMarketData(), registry, tmp_path / "models", plan, config, PromotionMargins(), refit=False
    )
    assert set(outcome.versions) == set(outcome.decisions) == KINDS
    assert outcome.refits == outcome.refit_decisions == outcome.refit_skipped == {}  # opted out
    baseline = {"log_loss": outcome.report["prior"]["log_loss"], "net_return": 0.0}
    assert set(outcome.report["ensemble"]) == set(MODEL_METRICS)  # scored with the served rule
    for kind, decision in outcome.decisions.items():
        metrics = {k: float("nan") if v is None else v for k, v in outcome.report[kind].items()}
        expected, _ = promotion_gate(metrics, None, baseline, PromotionMargins())  # type: ignore[arg-type]
        assert decision.promoted is expected, (kind, decision.reason)
    promotions, total = await registry.promotions(limit=50, offset=0)
    assert total == len(promotions) == 5
    ensemble = outcome.versions["ensemble"]
    trained, metadata = load_ensemble(Path(ensemble.artifact_path))
    assert set(metadata["members"]) == KINDS - {"ensemble"}
    assert set(trained.ensemble.weights) == KINDS - {"ensemble"}
    # the meta layer travels in the champion artifact, fitted on out-of-sample primary predictions
    layer = load_meta(Path(ensemble.artifact_path))
    assert layer.model is not None, (layer.absent, outcome.meta.get("absent"))
    assert outcome.meta["absent"] is None and outcome.meta["rows"] == layer.model.report["rows"]["total"]
    folds = outcome.meta["cross_fit"]
    assert any("predicted_rows" in fold for fold in folds)
    assert all(("predicted_rows" in fold) != ("skipped" in fold) for fold in folds)  # a skipped fold says why
    assert outcome.meta["barriers"]["max_hold_bars"] == MAX_HOLD_BARS
    assert layer.model.report["label_until_ms"] < plan.test_from_ms  # no label reaches the test window
    test_scores = outcome.meta["test"]
    assert set(test_scores["reliability"]) >= {"bins", "brier", "base_brier", "log_loss", "base_log_loss"}
    assert set(next(iter(test_scores["served_rule"].values()))) == set(MODEL_METRICS)
    assert ensemble.hyperparameters["meta"]["rows"] == outcome.meta["rows"]
    # the gate scored the ensemble as served: the minimum against the meta layer's probability, as score_version
    # scores a champion; the direction probability's figures are kept beside them
    parts, series = await load_rows(ReplayMarketData(), plan, config)
    _, test = split_by_time(parts, plan.test_from_ms, config.embargo_hours, plan.until_ms, plan.train_from_ms)
    markets = window_markets(series, plan.test_from_ms, plan.until_ms)
    rule = default_rule(config)
    combined = predictions(trained, test)["ensemble"]
    served = served_metrics(combined, layer.model, test, markets, rule)
    assert outcome.report["ensemble"] == served == score_version(ensemble, test, markets, rule)
    direction = score_trained(trained, test, markets, rule)["ensemble"]
    assert outcome.meta["direction_confidence_metrics"] == direction
    loose = replace(rule, min_confidence=0.5)  # the two confidences trade differently (a fixed rule could not)
    assert (
        served_metrics(combined, layer.model, test, markets, loose)["trades"]
        != (score_trained(trained, test, markets, loose)["ensemble"]["trades"])
    )
    assert {"meta_primary_cross_fit", "meta"} <= set(outcome.fit_seconds)

    # Every kind gets this run's version as champion; a run whose test window lies inside their
    # training data cannot compare with them there: every comparison is refused, nothing promoted.
    async with create_sessionmaker(engine)() as session, session.begin():
        for kind, decision in outcome.decisions.items():
            if not decision.promoted:
                await RegistryRepository(session).set_status([outcome.versions[kind].id], "champion", datetime.now(UTC))
    earlier = TrainPlan(("BTC/USDT:USDT",), _ms("2023-04-01"), train_days=60, test_days=20)
    again = await train_and_promote(
        ReplayMarketData(), registry, tmp_path / "models", earlier, config, PromotionMargins(), refit=False
    )
    for kind, decision in again.decisions.items():
        assert not decision.promoted, (kind, decision.reason)
        assert decision.reason.startswith(f"comparison refused: champion {outcome.versions[kind].id} was trained on")
        assert (await registry.champion(kind)).id == outcome.versions[kind].id  # type: ignore[union-attr]
    await engine.dispose()

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    data = default_data_root() / "ETH_USDT_USDT-1h-futures.csv.gz"
    args = ["evaluate", "--model", str(ensemble.id), "--data", str(data), "--json"]
    assert await asyncio.to_thread(main, args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(report) == [
        "xgboost",
        "lightgbm",
        "nhits",
        "patchtst",
        "ensemble",
        "prior",
        "fallback_momentum",
        "always_hold",
        "buy_and_hold",
    ]
    for name in ("xgboost", "lightgbm", "nhits", "patchtst", "ensemble", "prior"):
        assert set(report[name]) == set(MODEL_METRICS), name
    for name in ("fallback_momentum", "always_hold", "buy_and_hold"):
        assert set(report[name]) == set(TRADING_METRICS), name
    assert report["always_hold"]["trades"] == 0 and report["always_hold"]["net_return"] == 0.0
    assert report["buy_and_hold"]["trades"] == 1 and report["ensemble"]["log_loss"] is not None
    # the served rule trades far less than once an hour
    assert report["xgboost"]["trades"] < 0.2 * len(ReplayMarketData.load_candles_file(data, "ETH/USDT:USDT", "1h"))


class PinnedGate(ModelRegistry):
    """The real registry, with the gate's verdict on the baseline pinned per kind: `promote` always beats it, the
    others never do (1-epoch models on 90 days would make the test depend on what they happen to learn).
    Comparisons with a champion are the real gate's."""

    promote: frozenset[str] = frozenset({"xgboost", "ensemble"})

    async def decide(  # type: ignore[override]
        self,
        candidate_id: uuid.UUID,
        candidate_metrics: dict[str, float],
        champion_metrics: dict[str, float] | None,
        baseline_metrics: dict[str, float],
        window_start: datetime,
        window_end: datetime,
        margins: PromotionMargins = PromotionMargins(),  # noqa: B008
    ) -> PromotionDecision:
        kind = (await self.get(candidate_id)).kind
        beaten = {"log_loss": 1e9, "net_return": -1e9}
        unbeatable = {"log_loss": -1e9, "net_return": 1e9}
        baseline = beaten if kind in self.promote else unbeatable
        return await super().decide(
            candidate_id, candidate_metrics, champion_metrics, baseline, window_start, window_end, margins
        )


@pytest.mark.postgres
async def test_a_promoted_kind_is_refitted_on_all_data_and_becomes_champion(
    make_settings: Callable[..., Settings], pg_url: str, tmp_path: Path
) -> None:
    if not (default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz").exists():
        pytest.skip("!!! market data missing beside the repository")
    engine = create_engine(make_settings(database_url=pg_url).database_url)
    bus = EventBus()
    events = EventRecorder()
    bus.subscribe(ModelPromoted, events.record)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    registry = PinnedGate(create_sessionmaker(engine), bus, model_dir)
    plan = TrainPlan(("BTC/USDT:USDT",), _ms("2023-06-01"), train_days=60, test_days=20)
    config = TrainingConfig(torch_epochs=1)
    outcome = await train_and_promote(ReplayMarketData(), registry, model_dir, plan, config, PromotionMargins())

    assert {k for k, d in outcome.decisions.items() if d.promoted} == {"xgboost", "ensemble"}
    assert set(outcome.refits) == set(outcome.refit_decisions) == {"xgboost", "ensemble"}, outcome.refit_skipped
    until = datetime.fromtimestamp(plan.until_ms / 1000, tz=UTC)
    for kind, refit in outcome.refits.items():
        tested = outcome.versions[kind]
        champion = await registry.champion(kind)
        assert champion is not None and champion.id == refit.id
        assert (await registry.get(tested.id)).status == "retired"
        # trained on everything up to the plan's end, the test window included, and it says so
        assert refit.train_start == tested.train_start and refit.train_end == until > tested.train_end
        assert refit.hyperparameters["refit_of"] == str(tested.id)
        evidence = refit.hyperparameters["evidence"]
        assert evidence["metrics"] == tested.metrics == refit.metrics
        assert evidence["reason"] == outcome.decisions[kind].reason
        assert (evidence["window_start"], evidence["window_end"]) == (
            tested.test_start.isoformat(),
            tested.test_end.isoformat(),
        )
        decision = outcome.refit_decisions[kind]
        assert decision.promoted and decision.previous_champion_id == tested.id
        assert decision.reason == f"refit of {tested.id} on data to {until:%Y-%m-%d %H:%M}"
        records, _ = await registry.promotions(kind=kind)
        assert [(r.candidate_id, r.reason) for r in records] == [
            (refit.id, decision.reason),
            (tested.id, outcome.decisions[kind].reason),
        ]
    # the kinds that were not promoted are not refitted
    for kind in ("lightgbm", "nhits", "patchtst"):
        assert await registry.champion(kind) is None
        assert (await registry.get(outcome.versions[kind].id)).status == "candidate"
        assert [v.kind for v in (await registry.list(kind=kind))[0]] == [kind]
    await bus.drain()
    refit_events = [e for e in events.of(ModelPromoted) if e.reason.startswith("refit of")]
    assert {(e.kind, e.candidate_id, e.previous_champion_id) for e in refit_events} == {
        (k, str(v.id), str(outcome.versions[k].id)) for k, v in outcome.refits.items()
    }
    # the refitted ensemble names the refitted member where there is one, and learnt from the test window
    trained, metadata = load_ensemble(Path(outcome.refits["ensemble"].artifact_path))
    assert metadata["refit_of"] == str(outcome.versions["ensemble"].id)
    assert metadata["members"] == {
        "xgboost": str(outcome.refits["xgboost"].id),
        **{k: str(outcome.versions[k].id) for k in ("lightgbm", "nhits", "patchtst")},
    }
    assert max(s["to_ms"] for s in trained.fit_info["slices"].values()) >= plan.test_from_ms
    # the members refitted inside it without a version of their own say so where they vote
    assert metadata["refitted_inside"] == ["lightgbm", "nhits", "patchtst"]
    service = SignalService(ReplayMarketData(), registry, allow_fallback=False)
    try:
        champion = await service.load_champion()
        assert champion is not None and champion.version.id == outcome.refits["ensemble"].id
        assert set(champion.member_notes) == {"lightgbm", "nhits", "patchtst"}
        signal = await service.signal("BTCUSDT", plan.until_ms)
        for vote in signal.votes:
            if vote.kind == "xgboost":
                assert vote.version_id == str(outcome.refits["xgboost"].id) and vote.note is None
            elif vote.ran:
                assert vote.version_id == str(outcome.versions[vote.kind].id)
                assert vote.note is not None and "refitted on all data inside this ensemble" in vote.note
    finally:
        await service.close()
    # the meta layer is cross-fitted over the whole span, the candidate's test window included
    blocks = outcome.refits["ensemble"].hyperparameters["meta"]["cross_fit"]
    assert blocks[-1]["block_until_ms"] > plan.test_from_ms
    layer = load_meta(Path(outcome.refits["ensemble"].artifact_path))
    if layer.model is not None:
        assert layer.model.report["label_until_ms"] < plan.until_ms

    # A next run whose test window overlaps the refit's data cannot score the refit there: refused, not in-sample.
    later = TrainPlan(("BTC/USDT:USDT",), plan.until_ms + 10 * DAY_MS, train_days=60, test_days=20)
    again = await train_and_promote(ReplayMarketData(), registry, model_dir, later, config, PromotionMargins())
    for kind in ("xgboost", "ensemble"):
        decision = again.decisions[kind]
        assert not decision.promoted
        assert decision.reason.startswith(f"comparison refused: champion {outcome.refits[kind].id} was trained on")
        assert (await registry.champion(kind)).id == outcome.refits[kind].id  # type: ignore[union-attr]
    assert again.refits == {}

    # Once enough of a window lies after the refit's data, both are scored on that part only, an embargo after it.
    much_later = TrainPlan(("BTC/USDT:USDT",), plan.until_ms + 45 * DAY_MS, train_days=60, test_days=60)
    assert much_later.test_from_ms < plan.until_ms  # the window still overlaps the refit's data
    third = await train_and_promote(
        ReplayMarketData(), registry, model_dir, much_later, config, PromotionMargins(), refit=False
    )
    for kind in ("xgboost", "ensemble"):
        refit = outcome.refits[kind]
        start = comparison_start_ms(refit, much_later.test_from_ms, much_later.until_ms, config)
        seen_until_ms = (refit.train_end + label_reach(refit)).timestamp() * 1000
        assert (
            seen_until_ms + config.embargo_hours * HOUR_MS
            <= start
            < seen_until_ms + (config.embargo_hours + 1) * HOUR_MS
        )
        assert much_later.until_ms - start >= MIN_COMPARISON_DAYS * DAY_MS
        records, _ = await registry.promotions(kind=kind)
        latest = records[0]
        assert latest.candidate_id == third.versions[kind].id and latest.champion_id == refit.id
        assert not third.decisions[kind].reason.startswith("comparison refused")
        assert latest.window_start == datetime.fromtimestamp(start / 1000, tz=UTC)  # not the candidate's test start
        assert latest.champion_metrics is not None
        if kind == "xgboost":  # scored on the unseen part, not the whole window (a 1-epoch ensemble may have none)
            assert latest.candidate_metrics != third.versions[kind].metrics
    await engine.dispose()
