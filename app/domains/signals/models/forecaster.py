"""Training, inference and safe serialisation shared by the PyTorch forecasters (N-HiTS, PatchTST).

The wrapper standardises inputs (per channel) and targets (per horizon step) with statistics of the
training data and keeps them as buffers of the module, so `model.pt` alone reproduces predictions.
Artifacts are a plain `state_dict` (`model.pt`, loaded with `weights_only=True`, which refuses
arbitrary pickled objects) and the hyperparameters as plain JSON (`config.json`).

Fitting is deterministic for a given seed on a given machine: it runs under a forked RNG, with
deterministic algorithms and one intra-op thread, and restores torch's global settings afterwards.
Those settings are process-wide, so run fits one at a time per process.

The default head is distributional (`loss="gaussian_nll"`): for each of the `horizon` steps the network
predicts a mean and a log σ, trained with the Gaussian negative log-likelihood, so the predicted σ varies
from row to row. `predict` returns the distribution of the cumulative target over the horizon (the sum
of the steps): its mean (the sum of the step means) and σ (the root of the summed step variances, i.e.
the steps treated as independent, which hourly log returns nearly are). Point heads (`mse`, `huber`)
remain for comparison; their `predict` is the cumulative point forecast `(N,)`.
"""

import copy
import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.domains.markets.candles import FloatArray
from app.domains.signals.models import FORECASTER_KINDS
from app.domains.signals.models.nhits import NHITS
from app.domains.signals.models.patchtst import PatchTST
from app.domains.signals.models.tensors import load_state_dict, save_state_dict, seeded_torch

logger = logging.getLogger(__name__)
KINDS = FORECASTER_KINDS
LOSSES = ("gaussian_nll", "mse", "huber")
DISTRIBUTIONAL = "gaussian_nll"
LOG_SIGMA_BOUND = 6.0  # the standardised log σ is kept in (-6, 6) by a soft bound: σ is never 0 or huge
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
PATIENCE = 3
_PREDICT_BATCH = 4096


@dataclass(frozen=True)
class ForecasterConfig:
    """Hyperparameters of one forecaster; every field is JSON-serialisable (tuples become lists)."""

    kind: str
    window: int
    channels: int
    horizon: int = 1
    # N-HiTS: one stack per (pool kernel, downsampling factor) pair, coarse to fine.
    pool_kernels: tuple[int, ...] = (4, 2, 1)
    freq_downsample: tuple[int, ...] = (4, 2, 1)
    blocks_per_stack: int = 1
    hidden_size: int = 128
    mlp_layers: int = 2
    # PatchTST.
    patch_len: int = 8
    stride: int = 4
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    revin_center: bool = True  # False: scale-only instance normalisation (for centred targets such as returns)
    # Both.
    dropout: float = 0.1
    loss: str = DISTRIBUTIONAL
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if min(self.window, self.channels, self.horizon, self.epochs, self.batch_size) < 1:
            raise ValueError("window, channels, horizon, epochs and batch_size must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.learning_rate > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate must be positive and weight_decay non-negative")

    @property
    def distributional(self) -> bool:
        """The network predicts a mean and a log σ per step (Gaussian NLL), not a point forecast."""
        return self.loss == DISTRIBUTIONAL

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ForecasterConfig":
        """Config from `dataclasses.asdict` output or its JSON round trip (lists back to tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def build_network(config: ForecasterConfig) -> nn.Module:
    """The untrained `(B, L, C) → (B, H)` network the config describes (distributional: `→ (B, 2, H)`)."""
    if config.kind == "nhits":
        return NHITS(
            config.window,
            config.channels,
            config.horizon,
            pool_kernels=config.pool_kernels,
            freq_downsample=config.freq_downsample,
            blocks_per_stack=config.blocks_per_stack,
            hidden_size=config.hidden_size,
            mlp_layers=config.mlp_layers,
            dropout=config.dropout,
            distributional=config.distributional,
        )
    return PatchTST(
        config.window,
        config.channels,
        config.horizon,
        patch_len=config.patch_len,
        stride=config.stride,
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        d_ff=config.d_ff,
        dropout=config.dropout,
        distributional=config.distributional,
        center=config.revin_center,
    )


class ScaledForecaster(nn.Module):
    """A network between fitted standardisation of its inputs and of its targets (kept as buffers).

    A distributional network's output is `(B, 2, H)`: the standardised mean and (softly bounded) log σ."""

    x_mean: torch.Tensor
    x_scale: torch.Tensor
    y_mean: torch.Tensor
    y_scale: torch.Tensor

    def __init__(self, network: nn.Module, channels: int, horizon: int, distributional: bool = False) -> None:
        super().__init__()
        self.network = network
        self.distributional = distributional
        self.register_buffer("x_mean", torch.zeros(channels))
        self.register_buffer("x_scale", torch.ones(channels))
        self.register_buffer("y_mean", torch.zeros(horizon))
        self.register_buffer("y_scale", torch.ones(horizon))

    def scale_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_scale

    def standardised(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """The network's output on standardised windows; a distributional head's log σ softly bounded."""
        out: torch.Tensor = self.network(x_scaled)
        if not self.distributional:
            return out
        log_sigma = LOG_SIGMA_BOUND * torch.tanh(out[:, 1] / LOG_SIGMA_BOUND)
        return torch.stack([out[:, 0], log_sigma], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast `(B, H)` in target units of raw `(B, L, C)` windows; distributional: `(B, 2, H)`, the mean
        and σ (not log σ) of every step in target units."""
        standardised = self.standardised(self.scale_x(x))
        if not self.distributional:
            return standardised * self.y_scale + self.y_mean
        mean = standardised[:, 0] * self.y_scale + self.y_mean
        sigma = torch.exp(standardised[:, 1]) * self.y_scale
        return torch.stack([mean, sigma], dim=1)


def gaussian_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (without the constant ½ log 2π) of `(B, H)` targets under
    `(B, 2, H)` predicted means and log σ."""
    mean, log_sigma = output[:, 0], output[:, 1]
    return torch.mean(log_sigma + 0.5 * ((target - mean) * torch.exp(-log_sigma)) ** 2)


def _scale(values: FloatArray, axes: tuple[int, ...]) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation over `axes`; a constant column gets scale 1 instead of 0."""
    mean = values.mean(axis=axes)
    std = values.std(axis=axes)
    return mean, np.where(std > 1e-12, std, 1.0)


class TorchForecaster:
    """Fits, predicts with, saves and loads one N-HiTS or PatchTST forecaster."""

    def __init__(self, config: ForecasterConfig) -> None:
        self.config = config
        self.module = self._build()
        self.fitted = False
        self._inference: torch.jit.ScriptModule | None = None

    def _build(self) -> ScaledForecaster:
        with seeded_torch(self.config.seed):
            network = build_network(self.config)
        return ScaledForecaster(network, self.config.channels, self.config.horizon, self.config.distributional)

    def _windows(self, x: np.ndarray, name: str) -> FloatArray:
        arr = np.asarray(x, dtype=np.float64)
        expected = (self.config.window, self.config.channels)
        if arr.ndim != 3 or arr.shape[1:] != expected:
            raise ValueError(f"{name} must have shape (N, {expected[0]}, {expected[1]}), got {arr.shape}")
        if arr.shape[0] == 0 or not np.isfinite(arr).all():
            raise ValueError(f"{name} must be non-empty and finite")
        return arr

    def _targets(self, y: np.ndarray, n: int, name: str) -> FloatArray:
        arr = np.asarray(y, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape != (n, self.config.horizon):
            raise ValueError(f"{name} must have shape ({n},) or ({n}, {self.config.horizon}), got {np.shape(y)}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite")
        return arr

    def _loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.config.distributional:
            return gaussian_nll
        return nn.MSELoss() if self.config.loss == "mse" else nn.HuberLoss(delta=1.0)

    def _evaluate(self, module: ScaledForecaster, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean loss on standardised targets, in eval mode and batches."""
        loss_fn = self._loss()
        module.eval()
        total = 0.0
        with torch.inference_mode():
            for start in range(0, x.shape[0], _PREDICT_BATCH):
                xb, yb = x[start : start + _PREDICT_BATCH], y[start : start + _PREDICT_BATCH]
                total += float(loss_fn(module.standardised(xb), yb)) * xb.shape[0]
        return total / x.shape[0]

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Train from a fresh seeded initialisation on `(N, L, C)` windows and `(N,)` / `(N, H)` targets.

        Scaling is fitted on `x`, `y` only. With validation data, training stops after `PATIENCE`
        epochs without a lower validation loss and keeps the best epoch's weights. Losses are of the
        training objective on the standardised target (MSE: 1.0 ≈ always predicting the training mean;
        Gaussian NLL without ½ log 2π: 0.5 ≈ the training mean with the training σ); `val_loss` is NaN
        without validation data.
        """
        cfg = self.config
        x_arr = self._windows(x, "x")
        y_arr = self._targets(y, x_arr.shape[0], "y")
        if (x_val is None) != (y_val is None):
            raise ValueError("pass both x_val and y_val or neither")
        x_mean, x_scale = _scale(x_arr, (0, 1))
        y_mean, y_scale = _scale(y_arr, (0,))

        def standardise(xs: FloatArray, ys: FloatArray) -> tuple[torch.Tensor, torch.Tensor]:
            xt = torch.from_numpy(((xs - x_mean) / x_scale).astype(np.float32))
            yt = torch.from_numpy(((ys - y_mean) / y_scale).astype(np.float32))
            return xt, yt

        xt, yt = standardise(x_arr, y_arr)
        validation = None
        if x_val is not None and y_val is not None:
            xv_arr = self._windows(x_val, "x_val")
            validation = standardise(xv_arr, self._targets(y_val, xv_arr.shape[0], "y_val"))

        with seeded_torch(cfg.seed):
            module = ScaledForecaster(build_network(cfg), cfg.channels, cfg.horizon, cfg.distributional)
            for name, values in (("x_mean", x_mean), ("x_scale", x_scale), ("y_mean", y_mean), ("y_scale", y_scale)):
                getattr(module, name).copy_(torch.from_numpy(values.astype(np.float32)))
            optimizer = torch.optim.AdamW(
                module.network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
            loss_fn = self._loss()
            order = torch.Generator().manual_seed(cfg.seed)
            n = xt.shape[0]
            best_val, best_train, best_epoch = math.inf, math.nan, 0
            best_state: dict[str, torch.Tensor] | None = None
            epoch = 0
            for epoch in range(1, cfg.epochs + 1):
                module.train()
                total = 0.0
                for idx in torch.split(torch.randperm(n, generator=order), cfg.batch_size):
                    loss: torch.Tensor = loss_fn(module.standardised(xt[idx]), yt[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    total += float(loss.detach()) * idx.shape[0]
                train_loss = total / n
                if validation is None:
                    best_train, best_epoch = train_loss, epoch
                    continue
                val_loss = self._evaluate(module, *validation)
                if val_loss < best_val:
                    best_val, best_train, best_epoch = val_loss, train_loss, epoch
                    best_state = copy.deepcopy(module.state_dict())
                elif epoch - best_epoch >= PATIENCE:
                    break
            if best_state is not None:
                module.load_state_dict(best_state)
            module.eval()
        self.module, self.fitted = module, True
        self._inference = None
        return {
            "train_loss": best_train,
            "val_loss": best_val if validation is not None else math.nan,
            "epochs": float(epoch),
            "best_epoch": float(best_epoch),
        }

    def predict_horizon(self, x: np.ndarray) -> FloatArray:
        """Forecasts `(N, H)` of every horizon step for `(N, L, C)` windows, in target units (a distributional
        head's means)."""
        out = self._raw(x)
        return out[:, 0] if self.config.distributional else out

    def predict_steps(self, x: np.ndarray) -> tuple[FloatArray, FloatArray]:
        """A distributional head's mean and σ `(N, H)` of every horizon step, in target units."""
        if not self.config.distributional:
            raise ValueError(f"a {self.config.loss} forecaster predicts no σ")
        out = self._raw(x)
        return out[:, 0], out[:, 1]

    def _raw(self, x: np.ndarray) -> FloatArray:
        """The scaled module's output for `(N, L, C)` windows: `(N, H)` or `(N, 2, H)`."""
        if not self.fitted:
            raise RuntimeError("fit or load the forecaster before predicting")
        xt = torch.from_numpy(self._windows(x, "x").astype(np.float32))
        network = self._inference_network(xt[:1])
        parts: list[FloatArray] = []
        with torch.inference_mode():
            for start in range(0, xt.shape[0], _PREDICT_BATCH):
                out: torch.Tensor = network(xt[start : start + _PREDICT_BATCH])
                parts.append(out.numpy().astype(np.float64))
        return np.concatenate(parts, axis=0)

    def _inference_network(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The module traced and frozen for inference (same weights; a single window's Python
        overhead drops by half or more). Built once per fitted or loaded model."""
        if self.module.training:  # eval() walks every submodule: do it once, not per call
            self.module.eval()
        if self._inference is None:
            try:
                with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(self.module, example, check_trace=False)  # type: ignore[no-untyped-call]
                    self._inference = torch.jit.freeze(traced)
            except (RuntimeError, torch.jit.Error) as exc:
                logger.warning("forecaster_trace_failed", extra={"kind": self.config.kind, "error": str(exc)[:200]})
                return self.module
        return self._inference

    def warm_up(self, calls: int = 3) -> None:
        """Trace and freeze the inference network now and run it `calls` times on a dummy window (torch's
        JIT profiles the first calls of a frozen module before optimising it), so that serving starts warm."""
        example = np.zeros((1, self.config.window, self.config.channels), dtype=np.float64)
        for _ in range(calls):
            self.predict(example)

    def predict(self, x: np.ndarray) -> FloatArray:
        """What the ensemble consumes (`ensemble.forecast_to_probabilities`), for `(N, L, C)` windows: the
        cumulative target over the horizon (the sum of the steps). Distributional head: `(N, 2)`, its mean and
        σ (steps treated as independent); point head: the cumulative point forecast `(N,)`."""
        if not self.config.distributional:
            return np.asarray(self.predict_horizon(x).sum(axis=1), dtype=np.float64)
        mean, sigma = self.predict_steps(x)
        return np.column_stack([mean.sum(axis=1), np.sqrt((sigma**2).sum(axis=1))])

    def save(self, directory: Path) -> dict[str, str]:
        """Write `model.pt` (the state_dict only) and `config.json`; returns their paths and model.pt's SHA-256."""
        if not self.fitted:
            raise RuntimeError("fit the forecaster before saving it")
        directory.mkdir(parents=True, exist_ok=True)
        weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
        digest = save_state_dict(self.module, weights)
        config.write_text(json.dumps(dataclasses.asdict(self.config), indent=2, sort_keys=True, allow_nan=False))
        return {"weights": str(weights), "config": str(config), "sha256": digest}

    @classmethod
    def load(cls, directory: Path, *, expected_sha256: str | None = None) -> "TorchForecaster":
        """Rebuild a saved forecaster; tensors only (`weights_only=True`), optionally checking model.pt's hash."""
        state = load_state_dict(directory / WEIGHTS_FILE, expected_sha256)
        data = json.loads((directory / CONFIG_FILE).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{directory / CONFIG_FILE} is not a JSON object")
        forecaster = cls(ForecasterConfig.from_dict(data))
        forecaster.module.load_state_dict(state, strict=True)
        forecaster.module.eval()
        forecaster.fitted = True
        return forecaster
