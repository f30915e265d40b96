"""A training run end to end: versions, gate decisions, artifacts, and the CLI's evaluate."""

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.__main__ import main
from app.core.bus import EventBus
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.domains.learning.backtest import MAX_HOLD_BARS, MODEL_METRICS, TRADING_METRICS
from app.domains.learning.pipeline import TrainPlan, train_and_promote
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.signals.artifacts import load_ensemble, load_meta
from app.domains.signals.modelset import TrainingConfig
from app.domains.signals.registry.gate import PromotionMargins, promotion_gate
from app.domains.signals.registry.repository import RegistryRepository
from app.domains.signals.registry.service import ModelRegistry

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
    outcome = await train_and_promote(
        ReplayMarketData(), registry, tmp_path / "models", plan, TrainingConfig(torch_epochs=1), PromotionMargins()
    )
    assert set(outcome.versions) == set(outcome.decisions) == KINDS
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
    assert {"meta_primary_cross_fit", "meta"} <= set(outcome.fit_seconds)

    # Every kind gets this run's version as champion; a run whose test window lies inside their
    # training data cannot compare with them there: every comparison is refused, nothing promoted.
    async with create_sessionmaker(engine)() as session, session.begin():
        for kind, decision in outcome.decisions.items():
            if not decision.promoted:
                await RegistryRepository(session).set_status([outcome.versions[kind].id], "champion", datetime.now(UTC))
    earlier = TrainPlan(("BTC/USDT:USDT",), _ms("2023-04-01"), train_days=60, test_days=20)
    again = await train_and_promote(
        ReplayMarketData(), registry, tmp_path / "models", earlier, TrainingConfig(torch_epochs=1), PromotionMargins()
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
