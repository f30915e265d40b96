"""One training run end to end: data -> models -> artifacts -> registry -> promotion gate.

Every kind (the four models and the ensemble) gets a candidate version. Candidates and champions are
scored the same way on the candidate's test window: classification metrics of their probabilities,
and the served rule's economic value (`backtest`: the served decision, next-open entry, TP1/SL/max
hold, fees, slippage, funding). A champion trained on part of that window (a refit on all data) is scored with
the candidate on the rest, from an embargo after its data (`comparison_start_ms`), when at least
`MIN_COMPARISON_DAYS` remain; otherwise the registry refuses the comparison and says why. After a promotion the
promoted kind is refitted on all the data (`refit_promoted`).

The meta layer (`meta.MetaModel`, saved inside the ensemble artifact): P(TP1 before the stop within the served
rule's max hold) for the side the ensemble proposes, what the served `confidence` means. It learns from the primary
ensemble's OUT-OF-SAMPLE probabilities only: `cross_fitted_primary` cuts the training rows into `meta_folds + 1`
consecutive blocks and, for each block after the first, fits the primary ensemble exactly as the champion is fitted
(`fit_models`) on the rows ending `embargo_hours` before the block, and predicts the block. The champion's own
probabilities on its training rows (in sample, sharper than anything served) are never used. Labels:
`barriers.exit_plan_labels` with the served rule's barriers (`backtest.served_barriers`: TP1 and the stop as the
live exit plan sets them, ATR- and regime-scaled, and `backtest.MAX_HOLD_BARS`), the rows whose trade would end in
the test window purged. Cost: the k-th block's fit uses k / (meta_folds + 1) of the training rows, so the cross-fit
costs meta_folds / 2 full fits (one with the default 2), the meta model itself seconds; `fit_seconds` reports both.
With too few rows, or no usable ensemble in any block, the artifact records why the layer is absent and the served
confidence stays the direction probability (and says so).
"""

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.core.clock import DAY_MS, HOUR_MS
from app.domains.learning.backtest import (
    Metrics,
    SymbolMarket,
    TradeRule,
    rule_breakeven,
    score_probabilities,
    served_barriers,
    served_report,
    symbol_market,
)
from app.domains.learning.dataset import SymbolRows, split_by_time, symbol_rows
from app.domains.learning.evaluation import reliability_table
from app.domains.learning.training import fit_models, predictions
from app.domains.markets.candles import Candles, FloatArray, Funding, IntArray
from app.domains.markets.marketdata import MarketData
from app.domains.signals.artifacts import TORCH_KINDS, load_ensemble, load_meta, save_ensemble, save_member
from app.domains.signals.barriers import BarrierConfig
from app.domains.signals.ensemble import forecast_to_probabilities
from app.domains.signals.features import FEATURES, compute_features
from app.domains.signals.meta import (
    MetaConfig,
    MetaModel,
    MetaRows,
    barrier_summary,
    concat_rows,
    fit_meta,
    meta_rows,
    sides_from_probabilities,
)
from app.domains.signals.models import MODEL_KINDS
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier
from app.domains.signals.modelset import TrainedModels, TrainingConfig
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.models import ModelVersion
from app.domains.signals.registry.service import (
    ModelRegistry,
    PromotionDecision,
    code_version,
    label_reach,
    trained_on_window,
)

WARMUP_DAYS = 10  # history loaded before the training window, only to warm indicators up
CALIBRATION_FILE = "calibration.json"
META_FOLDS = 2  # forward-chaining blocks of out-of-sample primary predictions for the meta layer (0: no meta layer)


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
    meta: dict[str, Any] = field(default_factory=dict)  # the meta layer: how it was fitted, its test-window scores
    refits: dict[str, ModelVersion] = field(default_factory=dict)  # promoted kinds refitted on all data: the champions
    refit_decisions: dict[str, PromotionDecision] = field(default_factory=dict)  # how each refit became champion
    refit_skipped: dict[str, str] = field(default_factory=dict)  # promoted kinds not refitted, and why


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
    """An existing version's metrics on `test` (the candidate's window), with the served rule: an ensemble with a
    meta layer as served, its P(TP1 before the stop) against the minimum (`served_metrics`)."""
    probabilities = version_probabilities(version, test)
    if probabilities is None:
        return {"log_loss": None, "net_return": None}
    meta = load_meta(Path(version.artifact_path)).model if version.kind == "ensemble" else None
    return served_metrics(probabilities, meta, test, markets, rule)


def served_metrics(
    probabilities: FloatArray, meta: MetaModel | None, test: SymbolRows, markets: list[SymbolMarket], rule: TradeRule
) -> Metrics:
    """The served rule's metrics of class probabilities on `test`: with a meta layer, as the signal service serves
    them, the minimum confidence compared with the meta layer's P(TP1 before the stop) of the proposed side."""
    confidence = None
    if meta is not None:
        confidence = meta.predict_proba(test.x, probabilities, sides_from_probabilities(probabilities))
    return score_probabilities(probabilities, markets, test, rule, confidence)


def score_trained(
    trained: TrainedModels,
    test: SymbolRows,
    markets: list[SymbolMarket],
    rule: TradeRule,
    meta: MetaModel | None = None,
) -> dict[str, Metrics]:
    """Every model, the ensemble and the baselines on the test window (`backtest.served_report`); with the set's meta
    layer, the ensemble as served (`served_metrics`: the minimum against its P(TP1 before the stop))."""
    probabilities = predictions(trained, test)
    named = {kind: probabilities.get(kind) for kind in (*MODEL_KINDS, "ensemble")}
    report = served_report(named, markets, test, trained.prior, rule)
    combined = probabilities.get("ensemble")
    if meta is not None and combined is not None:
        report["ensemble"] = served_metrics(combined, meta, test, markets, rule)
    return report


# --- the meta layer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossFitted:
    """The primary ensemble's class probabilities on training rows it was NOT fitted on, one per predicted row."""

    timestamp: IntArray
    group: IntArray
    probabilities: FloatArray
    fitted_until_ms: IntArray  # per row: the newest row the predicting model was fitted on (< timestamp)
    folds: list[dict[str, Any]]


def cross_fitted_primary(train: SymbolRows, config: TrainingConfig, folds: int = META_FOLDS) -> CrossFitted:
    """Forward-chaining out-of-sample predictions of the primary ensemble on `train` (rows in time order): the span
    is cut into `folds + 1` equal blocks; before each block after the first, the ensemble is fitted as the
    champion is (`fit_models`) on the rows ending `embargo_hours` before it, and predicts the block. A block whose
    ensemble has no weights (no member beat the prior) gets no predictions."""
    if folds < 1 or len(train.y) == 0:
        raise ValueError(f"need folds >= 1 and training rows, got folds={folds}, rows={len(train.y)}")
    edges = np.linspace(int(train.timestamp[0]), int(train.timestamp[-1]) + 1, folds + 2).astype(np.int64)
    embargo = config.embargo_hours * HOUR_MS
    parts: list[tuple[np.ndarray, FloatArray, int]] = []
    report: list[dict[str, Any]] = []
    for k in range(1, folds + 1):
        lo, hi = int(edges[k]), int(edges[k + 1])
        fit_mask = train.timestamp < lo - embargo
        block = (train.timestamp >= lo) & (train.timestamp < hi)
        entry: dict[str, Any] = {"block_from_ms": lo, "block_until_ms": hi, "fit_rows": int(fit_mask.sum())}
        report.append(entry)
        if not fit_mask.any() or not block.any():
            entry["skipped"] = "no rows to fit or to predict"
            continue
        began = time.perf_counter()
        model = fit_models(train.take(fit_mask), config)
        entry["fit_seconds"] = time.perf_counter() - began
        entry["weights"] = model.ensemble.weights
        if not model.ensemble.usable:
            entry["skipped"] = "the fold's ensemble has no weights"
            continue
        rows = train.take(block)
        probabilities = model.ensemble.combine(model.probabilities(rows.x, rows.windows))
        entry["predicted_rows"] = int(block.sum())
        parts.append((np.flatnonzero(block), probabilities, int(train.timestamp[fit_mask].max())))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return CrossFitted(empty, empty, np.empty((0, 3)), empty, report)
    index = np.concatenate([p[0] for p in parts])
    return CrossFitted(
        train.timestamp[index],
        train.group[index],
        np.concatenate([p[1] for p in parts]),
        np.concatenate([np.full(len(p[0]), p[2], dtype=np.int64) for p in parts]),
        report,
    )


def rows_for_meta(
    series: list[MarketSeries],
    timestamp: IntArray,
    group: IntArray,
    probabilities: FloatArray,
    barriers: BarrierConfig,
    label_until_ms: int | None = None,
) -> MetaRows:
    """Meta rows (features, the primary's probabilities and its argmax side at t, the barrier label) at the rows
    given (`group` indexes `series`); only rows whose trade ends before `label_until_ms` (purged) are kept."""
    parts = []
    for g, s in enumerate(series):
        mine = group == g
        candles = s.candles
        at = np.searchsorted(candles.timestamp, timestamp[mine])
        if not np.array_equal(candles.timestamp[np.minimum(at, len(candles) - 1)], timestamp[mine]):
            raise ValueError(f"rows without a candle of {candles.symbol}")
        probs = np.full((len(candles), 3), np.nan)
        probs[at] = probabilities[mine]
        sides = np.zeros(len(candles), dtype=np.int64)
        sides[at] = sides_from_probabilities(probabilities[mine])
        rows = meta_rows(candles, compute_features(candles, s.funding), probs, sides, barriers, group=g)
        if label_until_ms is not None:
            rows = rows.take(rows.end_ms < label_until_ms)
        parts.append(rows)
    return concat_rows(parts)


@dataclass(frozen=True)
class MetaLayerFit:
    model: MetaModel | None
    absent: str | None  # why there is no model
    rows: MetaRows | None  # the rows it was fitted on (all out of sample for the primary)
    cross_fitted: CrossFitted | None
    evidence: dict[str, Any]
    seconds: dict[str, float]


def train_meta_layer(
    series: list[MarketSeries],
    train: SymbolRows,
    config: TrainingConfig,
    barriers: BarrierConfig,
    label_until_ms: int,
    folds: int = META_FOLDS,
    meta_config: MetaConfig | None = None,
) -> MetaLayerFit:
    """The meta layer for a champion fitted on `train`: cross-fitted primary probabilities, barrier labels of the
    rows whose trade ends before `label_until_ms`, `meta.fit_meta`. Never raises for lack of data: the result
    then has no model and says why."""
    if folds < 1:
        return MetaLayerFit(None, "the meta layer was not trained (meta_folds=0)", None, None, {}, {})
    began = time.perf_counter()
    cross = cross_fitted_primary(train, config, folds)
    seconds = {"meta_primary_cross_fit": time.perf_counter() - began}
    evidence: dict[str, Any] = {"meta_folds": folds, "cross_fit": cross.folds, "barriers": barrier_summary(barriers)}
    if len(cross.timestamp) == 0:
        why = "no out-of-sample primary predictions (no fold's ensemble had weights)"
        return MetaLayerFit(None, why, None, cross, evidence, seconds)
    rows = rows_for_meta(series, cross.timestamp, cross.group, cross.probabilities, barriers, label_until_ms)
    evidence["rows"] = len(rows)
    began = time.perf_counter()
    try:
        model = fit_meta(rows, meta_config, barriers=barriers)
    except ValueError as exc:
        return MetaLayerFit(None, f"meta model not fitted: {exc}", rows, cross, evidence, seconds)
    seconds["meta"] = time.perf_counter() - began
    evidence["fit"] = model.report
    return MetaLayerFit(model, None, rows, cross, evidence, seconds)


def score_meta(
    model: MetaModel,
    ensemble: FloatArray,
    test: SymbolRows,
    series: list[MarketSeries],
    markets: list[SymbolMarket],
    rule: TradeRule,
    barriers: BarrierConfig,
) -> dict[str, Any]:
    """The meta layer on the test window: calibration (reliability table, Brier and log loss against the meta
    model's training base rate) where a side is proposed and the outcome is known, and the served rule with its
    minimum confidence applied to the meta probability, at the rule's minimum and at the breakeven probability."""
    sides = sides_from_probabilities(ensemble)
    p_meta = model.predict_proba(test.x, ensemble, sides)
    rows = rows_for_meta(series, test.timestamp, test.group, ensemble, barriers)
    out: dict[str, Any] = {"base_rate": model.base_rate}
    if len(rows):
        predicted = model.predict_proba(rows.features, rows.primary_probs, rows.sides)
        out["reliability"] = reliability_table(predicted, rows.label, base_rate=model.base_rate).as_dict()
    breakeven, _, _ = rule_breakeven(rule, markets)
    dataset = test
    out["served_rule"] = {f"{rule.min_confidence:.4f}": score_probabilities(ensemble, markets, dataset, rule, p_meta)}
    if breakeven is not None:
        at_breakeven = replace(rule, min_confidence=breakeven)
        out["breakeven_probability"] = breakeven
        out["served_rule"][f"{breakeven:.4f}"] = score_probabilities(ensemble, markets, dataset, at_breakeven, p_meta)
    return out


MIN_COMPARISON_DAYS = 30
"""The shortest part of a test window a champion has not seen that a comparison is made on."""


def comparison_start_ms(champion: ModelVersion, test_from_ms: int, until_ms: int, config: TrainingConfig) -> int:
    """Where the comparison with `champion` starts: the test window's start, or, when the champion was trained on
    part of it (a refit on all data, `refit_promoted`), the first hour an embargo after its data (labels included)
    ends. `until_ms` (no comparison) when fewer than `MIN_COMPARISON_DAYS` of the window are left unseen: the
    registry then refuses the comparison and says why."""
    seen_until = champion.train_end + label_reach(champion)
    if trained_on_window("", champion, _utc(test_from_ms), _utc(until_ms)) is None:
        return test_from_ms
    start = int(seen_until.timestamp() * 1000) + config.embargo_hours * HOUR_MS
    start = -(-start // HOUR_MS) * HOUR_MS
    return start if until_ms - start >= MIN_COMPARISON_DAYS * DAY_MS else until_ms


async def train_and_promote(
    market: MarketData,
    registry: ModelRegistry,
    model_dir: Path,
    plan: TrainPlan,
    config: TrainingConfig,
    margins: PromotionMargins,
    rule: TradeRule | None = None,
    *,
    meta_folds: int = META_FOLDS,
    refit: bool = True,
) -> TrainOutcome:
    """Train, register every kind, and gate each against its champion on the test window; the ensemble's
    artifact carries the meta layer (see the module docstring; `meta_folds=0` trains none). With `refit`,
    every promoted kind is then refitted on all the data up to `plan.until_ms` and replaces the tested
    candidate as champion (`refit_promoted`).

    `rule`: the served rule the economic metrics use (default: `default_rule(config)`)."""
    rule = rule if rule is not None else default_rule(config)
    parts, series = await load_rows(market, plan, config)
    train, test = split_by_time(parts, plan.test_from_ms, config.embargo_hours, plan.until_ms, plan.train_from_ms)
    if len(train.y) == 0 or len(test.y) == 0:
        raise ValueError(f"no data for {plan.symbols} between {_utc(plan.train_from_ms)} and {_utc(plan.until_ms)}")
    trained = fit_models(train, config)
    markets = window_markets(series, plan.test_from_ms, plan.until_ms)
    report = score_trained(trained, test, markets, rule)
    barriers = served_barriers(rule)
    layer = train_meta_layer(series, train, config, barriers, plan.test_from_ms, meta_folds)
    meta_evidence: dict[str, Any] = {**layer.evidence, "absent": layer.absent}
    if layer.model is not None and trained.ensemble.usable:
        ensemble = predictions(trained, test)["ensemble"]
        meta_evidence["test"] = score_meta(layer.model, ensemble, test, series, markets, rule, barriers)
        # what the gate compares is what is served: the minimum against the meta layer's probability
        meta_evidence["direction_confidence_metrics"] = report["ensemble"]
        report = score_trained(trained, test, markets, rule, layer.model)
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
        trained,
        directory,
        {"members": {k: str(v.id) for k, v in versions.items()}, **_jsonable(common)},
        meta=layer.model,
        meta_absent=layer.absent,
    )
    versions["ensemble"] = await registry.register(
        "ensemble",
        directory,
        **common,
        hyperparameters={
            "training": asdict(config),
            "weights": trained.ensemble.weights,
            "temperature": trained.ensemble.temperature,
            "meta": _plain(meta_evidence),
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
        candidate_metrics = report[kind]
        window_from = plan.test_from_ms
        if champion is not None:
            window_from = comparison_start_ms(champion, plan.test_from_ms, plan.until_ms, config)
        if champion is not None and window_from < plan.until_ms:
            if window_from > plan.test_from_ms:  # the champion saw the window's start (a refit): the rest only
                sub_test = test.take(test.timestamp >= window_from)
                sub_markets = window_markets(series, window_from, plan.until_ms)
                candidate_metrics = score_trained(trained, sub_test, sub_markets, rule, layer.model)[kind]
            else:
                sub_test, sub_markets = test, markets
            champion_metrics = _as_gate_metrics(score_version(champion, sub_test, sub_markets, rule))
        else:
            window_from = plan.test_from_ms  # no champion, or it saw too much: the registry refuses, with the reason
        decisions[kind] = await registry.decide(
            version.id,
            _as_gate_metrics(candidate_metrics),
            champion_metrics,
            baseline,
            _utc(window_from),
            common["test_end"],
            margins,
        )
    fit_seconds = {**trained.fit_seconds, **layer.seconds}
    refits = Refits()
    if refit:
        refits = await refit_promoted(
            registry, model_dir, plan, config, parts, series, versions, decisions, barriers, meta_folds
        )
        fit_seconds.update(refits.fit_seconds)
    return TrainOutcome(
        report,
        versions,
        decisions,
        fit_seconds,
        len(train.y),
        len(test.y),
        _plain(meta_evidence),
        refits.versions,
        refits.decisions,
        refits.skipped,
    )


@dataclass(frozen=True)
class Refits:
    """What `refit_promoted` did: per kind the refit version and its promotion, or why a promoted kind was not
    refitted; and the fit seconds (keys `refit_*`)."""

    versions: dict[str, ModelVersion] = field(default_factory=dict)
    decisions: dict[str, PromotionDecision] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fit_seconds: dict[str, float] = field(default_factory=dict)


async def refit_promoted(
    registry: ModelRegistry,
    model_dir: Path,
    plan: TrainPlan,
    config: TrainingConfig,
    parts: list[SymbolRows],
    series: list[MarketSeries],
    versions: dict[str, ModelVersion],
    decisions: dict[str, PromotionDecision],
    barriers: BarrierConfig,
    meta_folds: int = META_FOLDS,
) -> Refits:
    """Refit every promoted kind on all rows [plan.train_from_ms, plan.until_ms) (the test window included), the
    same way the candidate was fitted (`fit_models`, and the ensemble's meta layer cross-fitted on those rows with
    labels ending before `until_ms`), register it as a refit of the promoted candidate (carrying its evidence, its
    training end `until_ms`) and make it the champion (`ModelRegistry.promote_refit`). The members are fitted once;
    the refitted ensemble names the refitted members where they were registered, else the tested candidates."""
    promoted = [kind for kind, decision in decisions.items() if decision.promoted]
    if not promoted:
        return Refits()
    rows, _ = split_by_time(parts, plan.until_ms, 0, plan.until_ms, plan.train_from_ms)
    if len(rows.y) == 0:
        return Refits(skipped={kind: "no rows to refit on" for kind in promoted})
    trained = fit_models(rows, config)
    seconds = {f"refit_{k}": v for k, v in trained.fit_seconds.items()}
    train_start, train_end = _utc(int(rows.timestamp[0])), _utc(plan.until_ms)
    code = code_version()
    run = f"{uuid.uuid4().hex[:12]}-refit"
    refits: dict[str, ModelVersion] = {}
    promotions: dict[str, PromotionDecision] = {}
    for kind in MODEL_KINDS:
        if kind not in promoted:
            continue
        directory = model_dir / kind / run
        saved = save_member(trained, kind, directory)
        hyper: dict[str, Any] = {"training": asdict(config)}
        if kind in TORCH_KINDS:
            calibration = {"residual_std": trained.residual_std[kind], "band": config.band}
            (directory / CALIBRATION_FILE).write_text(json.dumps(calibration))
            hyper["model"] = asdict(trained.forecasters[kind].config)
        else:
            hyper["model"] = asdict(trained.gbm[kind].config)
        refits[kind] = await registry.register_refit(
            versions[kind].id,
            directory,
            train_start=train_start,
            train_end=train_end,
            code_version=code,
            hyperparameters=hyper,
            artifact_sha256=saved["sha256"],
        )
        promotions[kind] = await registry.promote_refit(refits[kind].id, versions[kind].id)
    if "ensemble" in promoted:
        if not trained.ensemble.usable:
            why = "the refitted ensemble has no weights (no member beat the prior): the tested one stays champion"
            return Refits(refits, promotions, {"ensemble": why}, seconds)
        layer = train_meta_layer(series, rows, config, barriers, plan.until_ms, meta_folds)
        seconds.update({f"refit_{k}": v for k, v in layer.seconds.items()})
        candidate = versions["ensemble"]
        members = {k: str(refits[k].id) if k in refits else str(versions[k].id) for k in MODEL_KINDS}
        directory = model_dir / "ensemble" / run
        metadata = {
            "members": members,
            "refit_of": str(candidate.id),
            "refitted_members": [k for k in MODEL_KINDS if k in refits],
            # members that were not promoted, so not registered as refits: their weights here are the all-data fit,
            # not the tested candidate's the id names (the signal service says so in the member's vote)
            "refitted_inside": [k for k in MODEL_KINDS if k not in refits],
            **_jsonable(
                {
                    "symbols": list(plan.symbols),
                    "timeframe": plan.timeframe,
                    "train_start": train_start,
                    "train_end": train_end,
                    "test_start": candidate.test_start,
                    "test_end": candidate.test_end,
                    "features": list(FEATURES),
                    "code_version": code,
                }
            ),
        }
        saved = save_ensemble(trained, directory, metadata, meta=layer.model, meta_absent=layer.absent)
        refits["ensemble"] = await registry.register_refit(
            candidate.id,
            directory,
            train_start=train_start,
            train_end=train_end,
            code_version=code,
            hyperparameters={
                "training": asdict(config),
                "weights": trained.ensemble.weights,
                "temperature": trained.ensemble.temperature,
                "meta": _plain({**layer.evidence, "absent": layer.absent}),
            },
            artifact_sha256=saved["sha256"],
        )
        promotions["ensemble"] = await registry.promote_refit(refits["ensemble"].id, candidate.id)
    return Refits(refits, promotions, {}, seconds)


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars as floats, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    number = float(value)
    return number if np.isfinite(number) else None


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}
