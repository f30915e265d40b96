"""The ensemble: a weighted vote of the models' class probabilities.

The forecasters (N-HiTS, PatchTST) predict a Gaussian for the cumulative return over the label
horizon, with its own σ per row (a distributional head); `forecast_to_probabilities` turns it into
P(SHORT), P(HOLD), P(LONG). Each model's weight is its measured log-loss improvement over the prior
(training class frequencies) on rows no model was fitted or early-stopped on; a model that does not
beat the prior gets no weight. The combined probabilities are then calibrated by a temperature fitted
on a later slice that neither the members nor the weights chose on (`training.fit_models`).

Temperature: T = 1 by default. A softening T > 1 is fitted on the calibration rows. A sharpening
T < 1 is used only when it wins on held-out forward-chaining folds of those rows: most folds won and a
mean held-out log loss lower by more than two standard errors (`meta`'s rule, the same function),
because a score with no skill readily "wins" sharpening in-sample by luck.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from app.domains.markets.candles import FloatArray, IntArray
from app.domains.signals.labels import CLASSES
from app.domains.signals.meta import _clearly_negative, purged_train_mask

EPS = 1e-12
MIN_FOLD_ROWS = 50  # a held-out temperature fold, and the rows fitted before it, need at least this many


def forecast_to_probabilities(forecast: FloatArray, residual_std: float, band: float) -> FloatArray:
    """P(SHORT), P(HOLD), P(LONG) of a Gaussian forecast return against the no-trade `band`.

    `forecast` is `(N, 2)` (a distributional forecaster's `predict`: mean and σ per row; `residual_std`
    is then not used, callers pass NaN) or `(N,)` point forecasts with one constant error σ `residual_std`."""
    forecast = np.asarray(forecast, dtype=np.float64)
    if forecast.ndim == 2:
        forecast, sigma = forecast[:, 0], np.maximum(forecast[:, 1], EPS)
    elif not residual_std > 0:
        raise ValueError(f"a point forecast needs a positive residual σ, got {residual_std}")
    else:
        sigma = np.full(forecast.shape, max(residual_std, EPS))
    p_short = ndtr((-band - forecast) / sigma)  # the standard normal CDF, without scipy.stats' overhead
    p_long = ndtr((forecast - band) / sigma)
    p_hold = np.clip(1.0 - p_short - p_long, 0.0, 1.0)
    return np.column_stack([p_short, p_hold, p_long])


def log_loss(probabilities: FloatArray, y: np.ndarray) -> float:
    p = np.clip(probabilities[np.arange(len(y)), y], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def weights_from_losses(model_losses: dict[str, float], prior_loss: float) -> dict[str, float]:
    """Weight ∝ improvement over the prior; zero for models that do not improve on it."""
    gains = {name: max(0.0, prior_loss - loss) for name, loss in model_losses.items()}
    total = sum(gains.values())
    if total <= 0:
        return dict.fromkeys(model_losses, 0.0)
    return {name: gain / total for name, gain in gains.items()}


def _tempered(p: FloatArray, temperature: float) -> FloatArray:
    logits = np.log(np.clip(p, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def fit_temperature(probabilities: FloatArray, y: np.ndarray, *, sharpen: bool = False) -> float:
    """The temperature that minimises log loss on these rows: within [1, 20] (soften only) unless `sharpen`,
    then within [0.05, 20]. 1.0 = already calibrated."""
    low = 0.05 if sharpen else 1.0
    result = minimize_scalar(lambda t: log_loss(_tempered(probabilities, t), y), bounds=(low, 20.0), method="bounded")
    t = float(result.x)
    # the bounded search never returns its bound exactly: keep T = 1 when it does not beat T = 1
    return t if log_loss(_tempered(probabilities, t), y) < log_loss(probabilities, y) else 1.0


def choose_temperature(
    probabilities: FloatArray,
    y: np.ndarray,
    start: IntArray,
    end: IntArray,
    *,
    folds: int = 4,
    embargo_ms: int = 0,
) -> tuple[float, dict[str, Any]]:
    """The calibration temperature of these (time-ordered) rows and the evidence for it.

    The softening fit (T >= 1) unless the free fit sharpens (T < 1) and sharpening wins held out: the rows
    are cut into `folds + 1` blocks in time; each of the last `folds` blocks is scored by both fits made on
    the rows before it (purged of label windows [start, end] reaching the block, and embargoed), and the
    sharpened one must win most folds with a mean log-loss change below zero by more than two standard
    errors (`meta._clearly_negative`)."""
    soft = fit_temperature(probabilities, y)
    free = fit_temperature(probabilities, y, sharpen=True)
    evidence: dict[str, Any] = {"soft": soft, "free": free, "folds": []}
    if free >= 1.0:
        return soft, {**evidence, "choice": "soft: the free fit does not sharpen"}
    blocks = np.array_split(np.arange(len(y)), folds + 1)
    wins, deltas = 0, []
    for k in range(1, folds + 1):
        held = np.zeros(len(y), dtype=bool)
        held[blocks[k]] = True
        before = purged_train_mask(start, end, held, embargo_ms) & (np.arange(len(y)) < blocks[k][0])
        if before.sum() < MIN_FOLD_ROWS or held.sum() < MIN_FOLD_ROWS:
            continue
        losses = [
            log_loss(
                _tempered(probabilities[held], fit_temperature(probabilities[before], y[before], sharpen=s)), y[held]
            )
            for s in (False, True)
        ]
        deltas.append(losses[1] - losses[0])
        wins += losses[1] < losses[0]
        evidence["folds"].append({"soft_log_loss": losses[0], "sharpened_log_loss": losses[1]})
    if len(deltas) >= 2 and wins > len(deltas) / 2 and _clearly_negative(np.asarray(deltas)):
        return free, {**evidence, "choice": "sharpened: won on held-out folds"}
    return soft, {**evidence, "choice": "soft: sharpening did not win held out"}


@dataclass(frozen=True)
class EnsembleVote:
    side: str
    confidence: float
    probabilities: tuple[float, float, float]


@dataclass(frozen=True)
class Ensemble:
    weights: dict[str, float]
    temperature: float = 1.0
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)  # how the temperature was chosen

    @property
    def usable(self) -> bool:
        """False when no model beat the prior: the ensemble then has nothing to say."""
        return sum(self.weights.values()) > 0

    @property
    def active(self) -> tuple[str, ...]:
        """The members with a positive weight: the only ones `combine` reads (the others need not be run)."""
        return tuple(name for name, w in self.weights.items() if w > 0)

    def combine(self, per_model: dict[str, FloatArray]) -> FloatArray:
        missing = [name for name in self.active if name not in per_model]
        if missing:
            raise KeyError(f"no probabilities from weighted model(s): {', '.join(missing)}")
        if not self.usable:
            raise ValueError("no model beats the prior; the ensemble has no weights")
        mixed = sum(w * per_model[name] for name, w in self.weights.items() if w > 0)
        return _tempered(np.asarray(mixed), self.temperature)

    def vote(self, per_model: dict[str, FloatArray]) -> list[EnsembleVote]:
        combined = self.combine(per_model)
        return [
            EnsembleVote(CLASSES[int(row.argmax())], float(row.max()), (float(row[0]), float(row[1]), float(row[2])))
            for row in combined
        ]

    @classmethod
    def fit(cls, per_model: dict[str, FloatArray], y: np.ndarray, prior_loss: float) -> "Ensemble":
        """Weights from the members' log losses on these rows against the prior's (`prior_loss`); T = 1.
        Calibrate with `calibrated` on other rows."""
        return cls(weights_from_losses({n: log_loss(p, y) for n, p in per_model.items()}, prior_loss))

    def calibrated(
        self,
        per_model: dict[str, FloatArray],
        y: np.ndarray,
        start: IntArray,
        end: IntArray,
        embargo_ms: int = 0,
    ) -> "Ensemble":
        """These weights with the temperature `choose_temperature` picks on these (time-ordered) rows, which the
        weights must not have been chosen on. Without weights, unchanged."""
        if not self.usable:
            return self
        mixed = Ensemble(self.weights).combine(per_model)
        temperature, evidence = choose_temperature(mixed, y, start, end, embargo_ms=embargo_ms)
        return Ensemble(self.weights, temperature, evidence)
