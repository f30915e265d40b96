"""One training run end to end: data -> models -> artifacts -> registry -> promotion gate.

Every kind (the four models and the ensemble) gets a candidate version. Candidates and champions are
scored the same way on the candidate's test window: classification metrics of their probabilities,
and the served rule's economic value (`backtest`: the served decision, next-open entry, TP1/SL/max
hold, fees, slippage, funding). A champion trained on that window is not scored there: the registry
refuses the comparison.
"""

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.domains.signals.artifacts import TORCH_KINDS, load_ensemble, save_ensemble, save_member
from app.domains.signals.backtest import (
    Metrics,
    SymbolMarket,
    TradeRule,
    score_probabilities,
    served_report,
    symbol_market,
)
from app.domains.signals.candles import Candles, FloatArray, Funding
from app.domains.signals.ensemble import forecast_to_probabilities
from app.domains.signals.features import FEATURES
from app.domains.signals.marketdata import MarketData
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.service import ModelRegistry, PromotionDecision, code_version, trained_on_window
from app.domains.signals.training import (
    MODEL_KINDS,
    SymbolRows,
    TrainedModels,
    TrainingConfig,
    as_dataset,
    fit_models,
    predictions,
    split_by_time,
    symbol_rows,
)

DAY_MS = 86_400_000
WARMUP_DAYS = 10  # history loaded before the training window, only to warm indicators up
CALIBRATION_FILE = "calibration.json"


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


@dataclass(frozen=True)
class MarketSeries:
    """One symbol's candles and funding, from the warm-up before training to the end of the plan."""

    candles: Candles
    funding: Funding


async def load_rows(
    market: MarketData, plan: TrainPlan, config: TrainingConfig
) -> tuple[list[SymbolRows], list[MarketSeries]]:
    start = plan.train_from_ms - WARMUP_DAYS * DAY_MS
    parts, series = [], []
    for symbol in plan.symbols:
        candles = await market.candles(symbol, plan.timeframe, start, plan.until_ms)
        funding = await market.funding(symbol, start, plan.until_ms)
        parts.append(symbol_rows(candles, funding, config))
        series.append(MarketSeries(candles, funding))
    return parts, series


def window_markets(series: list[MarketSeries], start_ms: int, end_ms: int) -> list[SymbolMarket]:
    """The test window of every symbol, in the order of `plan.symbols` (the rows' group index)."""
    return [symbol_market(s.candles, s.funding, start_ms, end_ms) for s in series]


def default_rule(config: TrainingConfig, min_confidence: float | None = None) -> TradeRule:
    """The served rule with the training config's taker fee, and `min_confidence` (default: the
    active risk profile's `global_min_confidence`)."""
    if min_confidence is None:
        return TradeRule(fee_rate=config.fee_rate)
    return TradeRule(min_confidence=min_confidence, fee_rate=config.fee_rate)


def _as_gate_metrics(metrics: Metrics) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in metrics.items()}


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def version_probabilities(version: ModelVersion, test: SymbolRows) -> FloatArray | None:
    """An existing version's class probabilities on `test` (None: an ensemble without weights)."""
    directory = Path(version.artifact_path)
    if version.kind == "ensemble":
        trained, _ = load_ensemble(directory)
        return predictions(trained, test).get("ensemble")
    if version.kind in TORCH_KINDS:
        calibration = json.loads((directory / CALIBRATION_FILE).read_text())
        forecast = TorchForecaster.load(directory).predict(test.windows)
        return forecast_to_probabilities(forecast, calibration["residual_std"], calibration["band"])
    return GbmClassifier.load(directory).predict_proba(test.x)


def score_version(version: ModelVersion, test: SymbolRows, markets: list[SymbolMarket], rule: TradeRule) -> Metrics:
    """An existing version's metrics on `test` (the candidate's window), with the served rule."""
    probabilities = version_probabilities(version, test)
    if probabilities is None:
        return {"log_loss": None, "net_return": None}
    return score_probabilities(probabilities, markets, as_dataset(test), rule)


def score_trained(
    trained: TrainedModels, test: SymbolRows, markets: list[SymbolMarket], rule: TradeRule
) -> dict[str, Metrics]:
    """Every model, the ensemble and the baselines on the test window (`backtest.served_report`)."""
    probabilities = predictions(trained, test)
    named = {kind: probabilities.get(kind) for kind in (*MODEL_KINDS, "ensemble")}
    return served_report(named, markets, as_dataset(test), trained.prior, rule)


async def train_and_promote(
    market: MarketData,
    registry: ModelRegistry,
    model_dir: Path,
    plan: TrainPlan,
    config: TrainingConfig,
    margins: PromotionMargins,
    rule: TradeRule | None = None,
) -> TrainOutcome:
    """Train, register every kind, and gate each against its champion on the test window.

    `rule`: the served rule the economic metrics use (default: `default_rule(config)`)."""
    rule = rule if rule is not None else default_rule(config)
    parts, series = await load_rows(market, plan, config)
    train, test = split_by_time(parts, plan.test_from_ms, config.embargo_hours, plan.until_ms, plan.train_from_ms)
    if len(train.y) == 0 or len(test.y) == 0:
        raise ValueError(f"no data for {plan.symbols} between {_utc(plan.train_from_ms)} and {_utc(plan.until_ms)}")
    trained = fit_models(train, config)
    markets = window_markets(series, plan.test_from_ms, plan.until_ms)
    report = score_trained(trained, test, markets, rule)
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
    # Without a champion a candidate must beat the prior's log loss and always-HOLD's net return (0).
    baseline = {"log_loss": float(report["prior"]["log_loss"] or np.nan), "net_return": 0.0}
    decisions: dict[str, PromotionDecision] = {}
    for kind, version in versions.items():
        champion = await registry.champion(kind)
        champion_metrics = None
        if champion is not None and trained_on_window("", champion, common["test_start"], common["test_end"]) is None:
            # scored in-sample otherwise: the registry refuses that comparison, with the reason
            champion_metrics = _as_gate_metrics(score_version(champion, test, markets, rule))
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
