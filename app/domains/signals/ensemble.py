"""The ensemble: a weighted vote of the models' class probabilities.

Regression forecasters (N-HiTS, PatchTST) become class probabilities through a Gaussian
error model fitted on their validation residuals. Each model's weight is its measured
out-of-sample log-loss improvement over the prior (training class frequencies); a model
that does not beat the prior gets no weight. The combined probabilities are calibrated by
temperature scaling fitted on validation data, and the confidence is the winning class's
calibrated probability.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from app.domains.signals.candles import FloatArray
from app.domains.signals.labels import CLASSES

EPS = 1e-12


def forecast_to_probabilities(forecast: FloatArray, residual_std: float, band: float) -> FloatArray:
    """P(SHORT), P(HOLD), P(LONG) of a forecast return with Gaussian error of `residual_std`."""
    sigma = max(residual_std, EPS)
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


def fit_temperature(probabilities: FloatArray, y: np.ndarray) -> float:
    """The temperature that minimises validation log loss (1.0 = already calibrated)."""
    result = minimize_scalar(lambda t: log_loss(_tempered(probabilities, t), y), bounds=(0.05, 20.0), method="bounded")
    return float(result.x)


@dataclass(frozen=True)
class EnsembleVote:
    side: str
    confidence: float
    probabilities: tuple[float, float, float]


@dataclass(frozen=True)
class Ensemble:
    weights: dict[str, float]
    temperature: float = 1.0

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
    def fit(cls, per_model_val: dict[str, FloatArray], y_val: np.ndarray, prior_loss: float) -> "Ensemble":
        """Weights from validation log losses, then the temperature of the weighted mix."""
        weights = weights_from_losses({n: log_loss(p, y_val) for n, p in per_model_val.items()}, prior_loss)
        ensemble = cls(weights)
        if not ensemble.usable:
            return ensemble
        return cls(weights, fit_temperature(ensemble.combine(per_model_val), y_val))
