"""One training run end to end: data -> models -> artifacts -> registry -> promotion gate.

Every kind (the four models and the ensemble) gets a candidate version; each champion is
re-scored on the candidate's own test window before the gate compares them, so both are
judged on the same out-of-sample rows.
"""

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.domains.signals.artifacts import TORCH_KINDS, load_ensemble, save_ensemble, save_member
from app.domains.signals.ensemble import forecast_to_probabilities
from app.domains.signals.evaluation import evaluate_probabilities
from app.domains.signals.features import FEATURES
from app.domains.signals.marketdata import MarketData
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.service import ModelRegistry, PromotionDecision, code_version
from app.domains.signals.training import (
    MODEL_KINDS,
    SymbolRows,
    TrainingConfig,
    as_dataset,
    evaluate,
    fit_models,
    split_by_time,
    symbol_rows,
)

DAY_MS = 86_400_000
WARMUP_DAYS = 10  # history loaded before the training window, only to warm indicators up
CALIBRATION_FILE = "calibration.json"
Metrics = dict[str, float | None]


@dataclass(frozen=True)
class TrainPlan:
    symbols: tuple[str, ...]
    until_ms: int
    timeframe: str = "1h"
    train_days: int = 730
    test_days: int = 180

    @property
    def test_from_ms(self) -> int:
        return self.until_ms - self.test_days * DAY_MS

    @property
    def train_from_ms(self) -> int:
        return self.test_from_ms - self.train_days * DAY_MS


@dataclass(frozen=True)
class TrainOutcome:
    report: dict[str, Metrics]
    versions: dict[str, ModelVersion]
    decisions: dict[str, PromotionDecision]
    fit_seconds: dict[str, float]
    train_rows: int
    test_rows: int


async def load_rows(market: MarketData, plan: TrainPlan, config: TrainingConfig) -> list[SymbolRows]:
    start = plan.train_from_ms - WARMUP_DAYS * DAY_MS
    parts = []
    for symbol in plan.symbols:
        candles = await market.candles(symbol, plan.timeframe, start, plan.until_ms)
        funding = await market.funding(symbol, start, plan.until_ms)
        parts.append(symbol_rows(candles, funding, config))
    return parts


def _as_gate_metrics(metrics: Metrics) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in metrics.items()}


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def score_version(version: ModelVersion, test: SymbolRows, fee_rate: float) -> Metrics:
    """An existing version's metrics on `test` (the candidate's window)."""
    directory = Path(version.artifact_path)
    if version.kind == "ensemble":
        trained, _ = load_ensemble(directory)
        return dict(evaluate(trained, test)["ensemble"])
    if version.kind in TORCH_KINDS:
        calibration = json.loads((directory / CALIBRATION_FILE).read_text())
        forecast = TorchForecaster.load(directory).predict(test.windows)
        probabilities = forecast_to_probabilities(forecast, calibration["residual_std"], calibration["band"])
    else:
        probabilities = GbmClassifier.load(directory).predict_proba(test.x)
    return dict(evaluate_probabilities(probabilities, as_dataset(test), fee_rate))


async def train_and_promote(
    market: MarketData,
    registry: ModelRegistry,
    model_dir: Path,
    plan: TrainPlan,
    config: TrainingConfig,
    margins: PromotionMargins,
) -> TrainOutcome:
    parts = await load_rows(market, plan, config)
    train, test = split_by_time(parts, plan.test_from_ms, config.embargo_hours, plan.until_ms, plan.train_from_ms)
    if len(train.y) == 0 or len(test.y) == 0:
        raise ValueError(f"no data for {plan.symbols} between {_utc(plan.train_from_ms)} and {_utc(plan.until_ms)}")
    trained = fit_models(train, config)
    report = evaluate(trained, test)
    run = uuid.uuid4().hex[:12]
    common: dict[str, Any] = {
        "symbols": list(plan.symbols),
        "timeframe": plan.timeframe,
        "train_start": _utc(int(train.timestamp[0])),
        "train_end": _utc(int(train.timestamp[-1]) + 1),
        "test_start": _utc(plan.test_from_ms),
        "test_end": _utc(plan.until_ms),
        "features": list(FEATURES),
        "code_version": code_version(),
    }
    versions: dict[str, ModelVersion] = {}
    for kind in MODEL_KINDS:
        directory = model_dir / kind / run
        saved = save_member(trained, kind, directory)
        hyper: dict[str, Any] = {"training": asdict(config)}
        if kind in TORCH_KINDS:
            calibration = {"residual_std": trained.residual_std[kind], "band": config.band}
            (directory / CALIBRATION_FILE).write_text(json.dumps(calibration))
            hyper["model"] = asdict(trained.forecasters[kind].config)
        else:
            hyper["model"] = asdict(trained.gbm[kind].config)
        versions[kind] = await registry.register(
            kind,
            directory,
            **common,
            hyperparameters=hyper,
            metrics=_as_gate_metrics(report[kind]),
            artifact_sha256=saved["sha256"],
        )
    directory = model_dir / "ensemble" / run
    saved = save_ensemble(
        trained, directory, {"members": {k: str(v.id) for k, v in versions.items()}, **_jsonable(common)}
    )
    versions["ensemble"] = await registry.register(
        "ensemble",
        directory,
        **common,
        hyperparameters={
            "training": asdict(config),
            "weights": trained.ensemble.weights,
            "temperature": trained.ensemble.temperature,
        },
        metrics=_as_gate_metrics(report["ensemble"]),
        artifact_sha256=saved["sha256"],
    )
    baseline = {"log_loss": float(report["prior"]["log_loss"] or np.nan), "net_return": 0.0}
    decisions: dict[str, PromotionDecision] = {}
    for kind, version in versions.items():
        champion = await registry.champion(kind)
        champion_metrics = (
            _as_gate_metrics(score_version(champion, test, config.fee_rate)) if champion is not None else None
        )
        decisions[kind] = await registry.decide(
            version.id,
            _as_gate_metrics(report[kind]),
            champion_metrics,
            baseline,
            common["test_start"],
            common["test_end"],
            margins,
        )
    return TrainOutcome(report, versions, decisions, trained.fit_seconds, len(train.y), len(test.y))


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}
