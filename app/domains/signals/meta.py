"""Meta-labelling: P(the exit plan's TP1 is hit before its stop) for the side the primary models propose.

López de Prado's scheme: the primary (direction) models propose a side; a second model, trained only on rows where
a side is proposed, learns whether that trade reaches its first take-profit before its stop within the holding time
(`barriers`). Its inputs are the features at t, the primary's class probabilities at t and the proposed side; its
output is what the served `confidence` should mean.

The model is LightGBM (binary, shallow, heavily regularised): whether a long pays depends on interactions of the side
with the features (a long after a drop is not a long after a rise) that a logistic regression would need hand-made
crosses for; the library is already used and saved as text (no pickle). With no skill early stopping keeps it at
(about) its starting point, the training base rate.

Honest fitting (`fit_meta`), all slices in time order, each `embargo_ms` apart and purged of rows whose barrier window
reaches into the next slice:
  fit (oldest) -> early-stopping slice (chooses the number of trees) -> calibration slice (newest).
The trees weight their rows by average label uniqueness (hourly rows holding for up to a day overlap heavily).
The calibration is Platt scaling on the raw score's logit, p = sigmoid(a * logit(raw) + b), fitted on the calibration
slice only, which neither the trees nor early stopping saw. a = 1 / temperature. By default a <= 1 (a temperature
>= 1: calibration may soften, never sharpen); a > 1 (temperature < 1) is used only when it wins on held-out
forward-chaining folds of the calibration slice (a win in most folds, and a mean log loss lower by more than two
standard errors: on real candles a score with no skill readily "wins" sharpening by luck), and never beyond a = 4.

Use:
  rows = concat_rows([meta_rows(candles, features, primary_probs, sides, barriers, group=i) for each symbol])
  model = fit_meta(rows, barriers=barriers); model.save(directory)          # LightGBM text + meta.json
  confidence = MetaModel.load(directory).predict_proba(x_t, probs_t, side_t)  # NaN where the side is 0
The primary probabilities the meta model learns from must be out of sample for the primary (walk-forward or
cross-fitted predictions): in-sample they are sharper than anything served, and the meta model would learn that.
"""

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from app.core.clock import HOUR_MS
from app.domains.markets.candles import Candles, FloatArray, IntArray
from app.domains.signals.barriers import BarrierConfig, exit_plan_labels
from app.domains.signals.features import FEATURES, FeatureMatrix
from app.domains.signals.labels import CLASSES, HOLD, LONG, SHORT
from app.domains.signals.models.gbm import lightgbm_params

PRIMARY_INPUTS = ("p_short", "p_hold", "p_long", "side", "p_side")
MODEL_FILE = "model.txt"
META_FILE = "meta.json"
EPS = 1e-12
assert CLASSES[SHORT] == "SHORT" and CLASSES[LONG] == "LONG"  # the primary's probability columns


# --- inputs and rows ------------------------------------------------------------------------------------------


def sides_from_probabilities(primary_probs: FloatArray) -> IntArray:
    """The primary's argmax as a side: LONG +1, SHORT -1, HOLD 0 (the raw call, before any regime filter)."""
    best = np.asarray(primary_probs).argmax(axis=1)
    return np.where(best == LONG, 1, np.where(best == SHORT, -1, 0)).astype(np.int64)


def meta_inputs(features: FloatArray, primary_probs: FloatArray, sides: npt.ArrayLike) -> FloatArray:
    """The meta model's input matrix: features at t, the primary's P(SHORT), P(HOLD), P(LONG) at t, the proposed
    side and the primary's probability of that side (NaN without a side)."""
    x = np.asarray(features, dtype=np.float64)
    p = np.asarray(primary_probs, dtype=np.float64)
    side = np.asarray(sides, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or p.shape != (len(x), len(CLASSES)) or side.shape != (len(x),):
        raise ValueError(f"features (n, k), primary_probs (n, 3) and sides (n,) must align: {x.shape} {p.shape}")
    p_side = np.where(side > 0, p[:, LONG], np.where(side < 0, p[:, SHORT], np.nan))
    return np.column_stack([x, p[:, SHORT], p[:, HOLD], p[:, LONG], side, p_side])


@dataclass(frozen=True)
class MetaRows:
    """Rows with a proposed side and a known triple-barrier label, ascending by time.

    The label window of a row is [timestamp, end_ms]: features known at the close of candle `timestamp`, the
    trade ends in the candle opened at `end_ms`. Purging works on these windows."""

    timestamp: IntArray
    end_ms: IntArray
    features: FloatArray
    primary_probs: FloatArray
    sides: IntArray
    label: FloatArray  # 1.0 TP1 first, 0.0 stop first or timeout
    group: IntArray  # symbol index

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> "MetaRows":
        return MetaRows(
            self.timestamp[index],
            self.end_ms[index],
            self.features[index],
            self.primary_probs[index],
            self.sides[index],
            self.label[index],
            self.group[index],
        )

    @property
    def x(self) -> FloatArray:
        return meta_inputs(self.features, self.primary_probs, self.sides)


def meta_rows(
    candles: Candles,
    features: FeatureMatrix,
    primary_probs: FloatArray,
    sides: npt.ArrayLike,
    barriers: BarrierConfig | None = None,
    group: int = 0,
) -> MetaRows:
    """The meta model's training rows of one symbol: every candle with valid features, a proposed side, finite
    primary probabilities and a known label. Inputs are aligned with the candles."""
    side = np.asarray(sides, dtype=np.int64).reshape(-1)
    labels = exit_plan_labels(candles, side, barriers)
    probs = np.asarray(primary_probs, dtype=np.float64)
    keep = np.flatnonzero(features.valid & labels.known & (side != 0) & np.isfinite(probs).all(axis=1))
    return MetaRows(
        timestamp=candles.timestamp[keep],
        end_ms=candles.timestamp[labels.exit_bar[keep]],
        features=features.values[keep],
        primary_probs=probs[keep],
        sides=side[keep],
        label=labels.label[keep],
        group=np.full(len(keep), group, dtype=np.int64),
    )


def concat_rows(parts: list[MetaRows]) -> MetaRows:
    """Several symbols' rows in one set, ordered by time (ties keep the order of `parts`)."""
    timestamp = np.concatenate([p.timestamp for p in parts])
    order = np.argsort(timestamp, kind="stable")
    return MetaRows(
        timestamp[order],
        np.concatenate([p.end_ms for p in parts])[order],
        np.concatenate([p.features for p in parts])[order],
        np.concatenate([p.primary_probs for p in parts])[order],
        np.concatenate([p.sides for p in parts])[order],
        np.concatenate([p.label for p in parts])[order],
        np.concatenate([p.group for p in parts])[order],
    )


# --- purged, embargoed splits -------------------------------------------------------------------------------


def purged_train_mask(
    start: IntArray, end: IntArray, test: npt.NDArray[np.bool_], embargo_ms: int
) -> npt.NDArray[np.bool_]:
    """Rows that may train a model scored on the `test` rows (one contiguous window in time): not a test row, no
    label window [start, end] overlapping the test rows' span [first start, last end] (purged), and not starting
    within `embargo_ms` after that span (embargoed: their features still remember the test window)."""
    if not test.any():
        return ~test
    lo, hi = int(start[test].min()), int(end[test].max())
    overlaps = (start <= hi) & (end >= lo)
    embargoed = (start > hi) & (start <= hi + embargo_ms)
    return np.asarray(~test & ~overlaps & ~embargoed)


@dataclass(frozen=True)
class Split:
    train: npt.NDArray[np.intp]
    test: npt.NDArray[np.intp]


def purged_walk_forward_splits(
    start: IntArray, end: IntArray, n_folds: int, test_fraction: float, embargo_ms: int
) -> list[Split]:
    """Expanding-window folds over the newest `test_fraction` of the time span; each fold trains on the rows
    before it that survive purging and the embargo (`purged_train_mask`)."""
    t0, t1 = int(start.min()), int(start.max()) + 1
    fold_ms = int((t1 - t0) * test_fraction / n_folds)
    first = t1 - n_folds * fold_ms
    splits = []
    for k in range(n_folds):
        lo, hi = first + k * fold_ms, first + (k + 1) * fold_ms
        test = (start >= lo) & (start < hi)
        train = purged_train_mask(start, end, test, embargo_ms) & (start < lo)
        if train.any() and test.any():
            splits.append(Split(np.flatnonzero(train), np.flatnonzero(test)))
    return splits


def average_uniqueness(start: IntArray, end: IntArray, group: IntArray, bar_ms: int = HOUR_MS) -> FloatArray:
    """López de Prado's average uniqueness of each label: the mean over the candles of its window (start, end] of
    1 / the number of labels of the same symbol whose windows cover that candle. Hourly rows that each hold for a
    day share most of their outcome with their neighbours; weighting by uniqueness counts them about once."""
    out = np.ones(len(start))
    for g in np.unique(group):
        sel = np.flatnonzero(group == g)
        origin = int(start[sel].min())
        first = (start[sel] - origin) // bar_ms + 1  # the candle after the entry decision
        last = np.maximum((end[sel] - origin) // bar_ms, first)
        size = int(last.max()) + 2
        cover = np.zeros(size)
        np.add.at(cover, first, 1.0)
        np.add.at(cover, last + 1, -1.0)
        concurrency = np.cumsum(cover)
        inverse = np.where(concurrency > 0, 1.0 / np.maximum(concurrency, 1.0), 0.0)
        csum = np.concatenate([[0.0], np.cumsum(inverse)])
        out[sel] = (csum[last + 1] - csum[first]) / (last - first + 1)
    return out


def time_slices(
    start: IntArray, end: IntArray, fractions: tuple[float, ...], embargo_ms: int
) -> list[npt.NDArray[np.intp]]:
    """Consecutive slices of rows in time order, of about `fractions` of the rows each (summing to 1). Every
    boundary is purged (a row whose window reaches the next slice is dropped) and embargoed (the next slice starts
    `embargo_ms` after the last kept window ends), so no slice's labels look into the next one."""
    if not math.isclose(sum(fractions), 1.0) or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be > 0 and sum to 1, got {fractions}")
    order_start = np.sort(start)
    cuts = [int(order_start[min(len(start) - 1, int(len(start) * f))]) for f in np.cumsum(fractions)[:-1]]
    slices: list[npt.NDArray[np.intp]] = []
    lower: int | None = None
    for k in range(len(fractions)):
        mask = np.ones(len(start), dtype=bool)
        if lower is not None:
            mask &= start > lower + embargo_ms
        if k < len(cuts):
            mask &= (start < cuts[k]) & (end < cuts[k])
            lower = int(end[mask].max()) if mask.any() else cuts[k]
        slices.append(np.flatnonzero(mask))
    return slices


# --- scores and the reliability table -----------------------------------------------------------------------


def brier_score(p: FloatArray, y: FloatArray) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def binary_log_loss(p: FloatArray, y: FloatArray) -> float:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    t = np.asarray(y, dtype=np.float64)
    return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))


# --- calibration --------------------------------------------------------------------------------------------


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)))


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(z))))


MAX_SLOPE = 4.0  # the sharpest calibration ever allowed: temperature >= 0.25


def fit_platt(raw: FloatArray, y: FloatArray, *, sharpen: bool) -> tuple[float, float]:
    """(slope a, intercept b) minimising the log loss of sigmoid(a * logit(raw) + b); a <= 1 unless `sharpen`."""
    z = _logit(raw)

    def loss(params: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        a, b = float(params[0]), float(params[1])
        q = np.clip(_sigmoid(a * z + b), EPS, 1 - EPS)
        value = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        residual = q - y
        return float(value), np.array([np.mean(residual * z), np.mean(residual)])

    result = minimize(
        loss,
        np.array([1.0, 0.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(1e-3, MAX_SLOPE if sharpen else 1.0), (-20, 20)],
    )
    return float(result.x[0]), float(result.x[1])


@dataclass(frozen=True)
class Calibration:
    """p = sigmoid(slope * logit(raw) + intercept); temperature = 1 / slope."""

    slope: float = 1.0
    intercept: float = 0.0
    sharpened: bool = False  # True only when a slope > 1 won on held-out folds
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return 1.0 / self.slope

    def apply(self, raw: FloatArray) -> FloatArray:
        return _sigmoid(self.slope * _logit(raw) + self.intercept)


def _clearly_negative(deltas: FloatArray) -> bool:
    """The mean held-out change in log loss is below zero by more than two standard errors across folds: a
    sharper calibration that only wins by luck (as it readily does on a score with no skill) is not taken."""
    mean = float(deltas.mean())
    se = float(deltas.std(ddof=1)) / math.sqrt(len(deltas))
    return mean + 2.0 * se < 0


def fit_calibration(
    raw: FloatArray, y: FloatArray, start: IntArray, end: IntArray, folds: int = 4, embargo_ms: int = 0
) -> Calibration:
    """Platt scaling with slope <= 1 (temperature >= 1), unless the unconstrained fit (which may sharpen, up to
    `MAX_SLOPE`) wins on held-out forward-chaining folds of these rows: a win in most folds and a mean held-out log
    loss lower by more than two standard errors. Rows are in time order; each held-out block is scored by
    calibrators fitted on the purged rows before it."""
    soft = fit_platt(raw, y, sharpen=False)
    free = fit_platt(raw, y, sharpen=True)
    evidence: dict[str, Any] = {"soft_slope": soft[0], "free_slope": free[0], "folds": []}
    if free[0] <= 1.0 + 1e-6:
        return Calibration(soft[0], soft[1], False, {**evidence, "choice": "soft: the free fit does not sharpen"})
    blocks = np.array_split(np.arange(len(raw)), folds + 1)
    wins, deltas = 0, []
    for k in range(1, folds + 1):
        held = np.zeros(len(raw), dtype=bool)
        held[blocks[k]] = True
        before = purged_train_mask(start, end, held, embargo_ms) & (np.arange(len(raw)) < blocks[k][0])
        if before.sum() < 50 or held.sum() < 50:
            continue
        losses = []
        for sharpen in (False, True):
            a, b = fit_platt(raw[before], y[before], sharpen=sharpen)
            losses.append(binary_log_loss(_sigmoid(a * _logit(raw[held]) + b), y[held]))
        deltas.append(losses[1] - losses[0])
        wins += losses[1] < losses[0]
        evidence["folds"].append({"soft_log_loss": losses[0], "sharpened_log_loss": losses[1]})
    if len(deltas) >= 2 and wins > len(deltas) / 2 and _clearly_negative(np.asarray(deltas)):
        return Calibration(free[0], free[1], True, {**evidence, "choice": "sharpened: won on held-out folds"})
    return Calibration(soft[0], soft[1], False, {**evidence, "choice": "soft: sharpening did not win held out"})


# --- the model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaConfig:
    n_rounds: int = 400
    learning_rate: float = 0.03
    num_leaves: int = 7
    max_depth: int = 3
    min_child_samples: int = 300
    subsample: float = 0.7
    colsample: float = 0.7
    l2: float = 10.0
    early_stopping_rounds: int = 40
    seed: int = 0
    early_stop_fraction: float = 0.2  # of the training rows: chooses the number of trees
    calibration_fraction: float = 0.2  # the newest rows: fit the calibration, nothing else
    embargo_ms: int = 24 * HOUR_MS
    calibration_folds: int = 4
    uniqueness_weights: bool = True  # weight the trees' training rows by `average_uniqueness`

    def __post_init__(self) -> None:
        stop, cal = self.early_stop_fraction, self.calibration_fraction
        if stop <= 0 or cal <= 0 or stop + cal >= 0.9:
            raise ValueError("early_stop_fraction and calibration_fraction must be > 0 and leave rows to fit")


class MetaModel:
    """P(TP1 before the stop) for proposed sides; `predict_proba` is NaN where no side is proposed."""

    def __init__(
        self,
        booster: lgb.Booster,
        calibration: Calibration,
        base_rate: float,
        config: MetaConfig,
        feature_names: tuple[str, ...] = FEATURES,
        barriers: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        self.booster = booster
        self.calibration = calibration
        self.base_rate = base_rate
        self.config = config
        self.feature_names = feature_names
        self.barriers = barriers or {}
        self.report = report or {}

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.feature_names, *PRIMARY_INPUTS)

    def raw_proba(self, features: FloatArray, primary_probs: FloatArray, sides: npt.ArrayLike) -> FloatArray:
        """The trees' probability before calibration."""
        x = meta_inputs(features, primary_probs, sides)
        if x.shape[1] != len(self.inputs):
            raise ValueError(f"expected {len(self.feature_names)} features, got {x.shape[1] - len(PRIMARY_INPUTS)}")
        return np.asarray(self.booster.predict(x), dtype=np.float64)

    def predict_proba(self, features: FloatArray, primary_probs: FloatArray, sides: npt.ArrayLike) -> FloatArray:
        """Calibrated P(TP1 before the stop within the holding time), one per row; NaN where the side is 0."""
        side = np.asarray(sides, dtype=np.int64).reshape(-1)
        p = self.calibration.apply(self.raw_proba(features, primary_probs, side))
        return np.asarray(np.where(side != 0, p, np.nan))

    # --- saving (pickle-free: LightGBM text + JSON) ---

    def save(self, directory: Path) -> dict[str, str]:
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / MODEL_FILE
        self.booster.save_model(str(weights))
        sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        document = {
            "config": asdict(self.config),
            "inputs": list(self.inputs),
            "feature_names": list(self.feature_names),
            "calibration": asdict(self.calibration),
            "base_rate": self.base_rate,
            "barriers": self.barriers,
            "report": self.report,
            "model_sha256": sha256,
        }
        meta = directory / META_FILE
        meta.write_text(json.dumps(document, indent=1, sort_keys=True, default=float))
        return {"weights": str(weights), "meta": str(meta), "sha256": sha256}

    @classmethod
    def load(cls, directory: Path, feature_names: tuple[str, ...] = FEATURES) -> "MetaModel":
        """Load a saved model; refuses one trained on other inputs or whose weights changed since."""
        document = json.loads((directory / META_FILE).read_text())
        weights = directory / MODEL_FILE
        if hashlib.sha256(weights.read_bytes()).hexdigest() != document["model_sha256"]:
            raise ValueError(f"{weights}: sha256 differs from the one recorded at training")
        if tuple(document["feature_names"]) != feature_names:
            raise ValueError(f"{directory}: trained on other features than this code computes")
        return cls(
            lgb.Booster(model_file=str(weights)),
            Calibration(**document["calibration"]),
            float(document["base_rate"]),
            MetaConfig(**document["config"]),
            feature_names,
            dict(document["barriers"]),
            dict(document["report"]),
        )


def barrier_summary(config: BarrierConfig) -> dict[str, Any]:
    """What the model's probability refers to, recorded with it."""
    ex = config.exit
    return {
        "max_hold_bars": config.max_hold_bars,
        "volatility_scaled": config.volatility_scaled,
        "regime_scaled": config.volatility_scaled and config.regime_scaled,
        "atr_bars": config.atr_bars,
        "tp_scale": config.tp_scale,
        "stop_scale": config.stop_scale,
        "tp1_distance": ex.tp_distances[0],
        "sl_distance": ex.sl_distance,
        "atr_tp1_multiple": ex.atr_tp_multiples[0],
        "atr_sl_multiple": ex.atr_sl_multiple,
        "min_distance": ex.min_distance,
        "regime_tp_scales": {r: ex.regime_tp_scale(r) for r in ("trending", "ranging", "volatile")},
    }


def _params(cfg: MetaConfig) -> dict[str, Any]:
    return lightgbm_params(cfg, "binary")


def fit_meta(
    rows: MetaRows,
    config: MetaConfig | None = None,
    *,
    barriers: BarrierConfig | None = None,
    feature_names: tuple[str, ...] = FEATURES,
) -> MetaModel:
    """Fit, early-stop and calibrate on three purged, embargoed slices of `rows` (see the module docstring)."""
    cfg = config or MetaConfig()
    if len(rows) < 150:
        raise ValueError(f"too few rows to fit honestly: {len(rows)} in all")
    fit_f = 1.0 - cfg.early_stop_fraction - cfg.calibration_fraction
    fit_i, stop_i, cal_i = time_slices(
        rows.timestamp, rows.end_ms, (fit_f, cfg.early_stop_fraction, cfg.calibration_fraction), cfg.embargo_ms
    )
    if min(len(fit_i), len(stop_i), len(cal_i)) < 50:
        raise ValueError(f"too few rows to fit honestly: fit {len(fit_i)}, stop {len(stop_i)}, calibrate {len(cal_i)}")
    x = rows.x
    base_rate = float(rows.label[fit_i].mean())
    weights: FloatArray | None = None
    stop_weights: FloatArray | None = None
    if cfg.uniqueness_weights:
        unique = average_uniqueness(rows.timestamp, rows.end_ms, rows.group)
        weights, stop_weights = unique[fit_i] / unique[fit_i].mean(), unique[stop_i] / unique[stop_i].mean()
    train_set = lgb.Dataset(x[fit_i], label=rows.label[fit_i], weight=weights)
    stop_set = lgb.Dataset(x[stop_i], label=rows.label[stop_i], weight=stop_weights, reference=train_set)
    booster = lgb.train(
        _params(cfg),
        train_set,
        num_boost_round=cfg.n_rounds,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    best = int(booster.best_iteration or cfg.n_rounds)
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))  # keep exactly the chosen trees
    raw_cal = np.asarray(booster.predict(x[cal_i]), dtype=np.float64)
    y_cal = rows.label[cal_i]
    calibration = fit_calibration(
        raw_cal, y_cal, rows.timestamp[cal_i], rows.end_ms[cal_i], cfg.calibration_folds, cfg.embargo_ms
    )
    raw_stop = np.asarray(booster.predict(x[stop_i]), dtype=np.float64)
    report = {
        "rows": {"fit": len(fit_i), "early_stop": len(stop_i), "calibration": len(cal_i), "total": len(rows)},
        "best_iteration": best,
        "base_rate": base_rate,
        "early_stop_log_loss": binary_log_loss(raw_stop, rows.label[stop_i]),
        "early_stop_base_log_loss": binary_log_loss(np.full(len(stop_i), base_rate), rows.label[stop_i]),
        "calibration_raw_log_loss": binary_log_loss(raw_cal, y_cal),
        "calibration_log_loss": binary_log_loss(calibration.apply(raw_cal), y_cal),  # in-sample for the calibrator
        "calibration_base_log_loss": binary_log_loss(np.full(len(cal_i), base_rate), y_cal),
        "temperature": calibration.temperature,
        "calibration_choice": calibration.evidence.get("choice", ""),
        "fit_until_ms": int(rows.timestamp[cal_i].max()),
        "label_until_ms": int(rows.end_ms.max()),
    }
    summary = barrier_summary(barriers) if barriers is not None else {}
    return MetaModel(booster, calibration, base_rate, cfg, feature_names, summary, report)
