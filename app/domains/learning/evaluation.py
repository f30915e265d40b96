"""The classification metrics shared by training, the report and promotion, and the class prior they are judged against.

Economic value is NOT measured here: the report, `python -m app evaluate`, the promotion gate and
the CLM score what is served with `backtest` (the served decision and minimum confidence, next-open
entry, TP1/SL/max hold, fees, slippage, funding). Metrics are computed on out-of-sample rows only.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.domains.markets.candles import FloatArray
from app.domains.signals.labels import CLASSES
from app.domains.signals.meta import binary_log_loss, brier_score

EPS = 1e-12


def classification_metrics(probabilities: FloatArray, y: npt.NDArray[np.int64]) -> dict[str, float]:
    p = np.clip(probabilities, EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    onehot = np.eye(len(CLASSES))[y]
    return {
        "accuracy": float((p.argmax(axis=1) == y).mean()),
        "log_loss": float(-np.mean(np.log(p[np.arange(len(y)), y]))),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
    }


def prior_probabilities(y_train: npt.NDArray[np.int64], n: int) -> FloatArray:
    """The baseline every model must beat: training class frequencies, for every row."""
    counts = np.bincount(y_train, minlength=len(CLASSES)).astype(np.float64)
    return np.tile(counts / counts.sum(), (n, 1))


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    predicted_mean: float  # NaN for an empty bin
    observed_frequency: float


@dataclass(frozen=True)
class Reliability:
    """Predicted P(TP1 before the stop) against the observed frequency, per bin, with the scores beside the base
    rate's (the constant prediction `base_rate`, from training data, or the observed frequency if not given)."""

    bins: tuple[ReliabilityBin, ...]
    count: int
    brier: float
    log_loss: float
    base_rate: float
    base_brier: float
    base_log_loss: float
    observed_frequency: float
    predicted_mean: float

    @property
    def brier_skill(self) -> float:
        """1 - Brier / base-rate Brier: > 0 beats the base rate."""
        return 1.0 - self.brier / self.base_brier if self.base_brier > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "brier_skill": self.brier_skill}

    def format(self) -> str:
        lines = [
            f"rows {self.count}  observed {self.observed_frequency:.4f}  predicted mean {self.predicted_mean:.4f}",
            f"Brier {self.brier:.5f} (base rate {self.base_rate:.4f}: {self.base_brier:.5f}; skill "
            f"{self.brier_skill:+.4f})  log loss {self.log_loss:.5f} (base rate: {self.base_log_loss:.5f})",
            "  bin              count  predicted  observed",
        ]
        for b in self.bins:
            if b.count:
                row = f"{b.count:6d}  {b.predicted_mean:9.4f}  {b.observed_frequency:8.4f}"
                lines.append(f"  [{b.lower:.3f}, {b.upper:.3f})  {row}")
        return "\n".join(lines)


def reliability_table(
    p: FloatArray, y: FloatArray, n_bins: int = 10, *, base_rate: float | None = None, quantile: bool = False
) -> Reliability:
    """Bins of equal width on [0, 1] (or of equal count with `quantile`), each with its mean prediction and observed
    frequency, and the Brier score and log loss beside those of the base rate."""
    pred = np.asarray(p, dtype=np.float64)
    obs = np.asarray(y, dtype=np.float64)
    if pred.shape != obs.shape or pred.ndim != 1 or len(pred) == 0:
        raise ValueError("p and y must be non-empty 1-d arrays of the same length")
    edges = np.quantile(pred, np.linspace(0, 1, n_bins + 1)) if quantile else np.linspace(0, 1, n_bins + 1)
    edges[0], edges[-1] = 0.0, 1.0
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, n_bins - 1)
    bins = []
    for k in range(n_bins):
        sel = which == k
        count = int(sel.sum())
        bins.append(
            ReliabilityBin(
                float(edges[k]),
                float(edges[k + 1]),
                count,
                float(pred[sel].mean()) if count else math.nan,
                float(obs[sel].mean()) if count else math.nan,
            )
        )
    base = float(obs.mean()) if base_rate is None else float(base_rate)
    constant = np.full(len(obs), base)
    return Reliability(
        bins=tuple(bins),
        count=len(obs),
        brier=brier_score(pred, obs),
        log_loss=binary_log_loss(pred, obs),
        base_rate=base,
        base_brier=brier_score(constant, obs),
        base_log_loss=binary_log_loss(constant, obs),
        observed_frequency=float(obs.mean()),
        predicted_mean=float(pred.mean()),
    )
