"""The model set the service serves: its config, its members and ensemble, and the inputs of the last candle.

Training (`app.domains.learning.training`) builds a `TrainedModels`; artifacts save and load it; the signal service
asks it for class probabilities. `latest_inputs` builds the last candle's inputs exactly as the learning dataset
(`app.domains.learning.dataset.symbol_rows`) builds every row's.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.domains.markets.candles import Candles, FloatArray, Funding
from app.domains.signals.ensemble import Ensemble, forecast_to_probabilities
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier

WINDOW_CHANNELS = ("ret_1", "atr_pct", "volume_z_72", "rsi_14")  # per-candle inputs of the forecasters


@dataclass(frozen=True)
class TrainingConfig:
    horizon: int = 4
    band: float = 0.002
    window: int = 48
    embargo_hours: int = 24
    validation_fraction: float = 0.2  # the early-stopping slice's share of the training rows
    weights_fraction: float = 0.125  # the ensemble-weights slice's share
    calibration_fraction: float = 0.125  # the calibration slice's share (the newest rows)
    fee_rate: float = 0.0004
    torch_epochs: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        shares = (self.validation_fraction, self.weights_fraction, self.calibration_fraction)
        if min(shares) <= 0 or sum(shares) >= 0.9:
            raise ValueError(
                f"the early-stopping, weights and calibration shares must be > 0 and leave >= 10 % to fit, got {shares}"
            )


def window_channels(features: FeatureMatrix) -> FloatArray:
    """Per-candle inputs of the forecasters, centred where a feature has a natural middle."""
    channels = np.column_stack([features.column(name) for name in WINDOW_CHANNELS])
    channels[:, WINDOW_CHANNELS.index("rsi_14")] -= 0.5
    return channels


@dataclass(frozen=True)
class LatestInputs:
    """Model inputs of the last candle, exactly as training builds them for every row."""

    features: FeatureMatrix
    x: FloatArray  # (1, len(FEATURES))
    window: FloatArray  # (1, window, len(WINDOW_CHANNELS))
    ready: bool  # False while the indicators or the window are still warming up


def latest_inputs(candles: Candles, funding: Funding | None, config: TrainingConfig) -> LatestInputs:
    features = compute_features(candles, funding)
    channels = window_channels(features)
    ready = len(candles) >= config.window and bool(features.valid[-config.window :].all())
    return LatestInputs(features, features.values[-1:], channels[None, -config.window :, :], ready)


@dataclass
class TrainedModels:
    config: TrainingConfig
    gbm: dict[str, GbmClassifier]
    forecasters: dict[str, TorchForecaster]
    ensemble: Ensemble
    prior: FloatArray  # class frequencies of all training rows (3,): the baseline every model must beat
    fit_seconds: dict[str, float] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)  # slices, stopping points, weights-slice losses

    @property
    def residual_std(self) -> dict[str, float]:
        """Kept for callers of `forecast_to_probabilities(forecaster.predict(w), residual_std[kind], band)`: the
        forecasters predict σ per row (`predict` gives mean and σ), so there is no constant error σ (NaN, unused)."""
        return dict.fromkeys(self.forecasters, float("nan"))

    def member_probabilities(self, kind: str, x: FloatArray, windows: FloatArray) -> FloatArray:
        """One member's class probabilities: the boosted trees read the features, the forecasters the windows."""
        if kind in self.gbm:
            return self.gbm[kind].predict_proba(x)
        return forecast_to_probabilities(self.forecasters[kind].predict(windows), float("nan"), self.config.band)

    def probabilities(
        self, x: FloatArray, windows: FloatArray, kinds: tuple[str, ...] | None = None
    ) -> dict[str, FloatArray]:
        """Class probabilities of every member (or of `kinds` only, e.g. `ensemble.active`)."""
        wanted = [*self.gbm, *self.forecasters] if kinds is None else kinds
        return {kind: self.member_probabilities(kind, x, windows) for kind in wanted}
