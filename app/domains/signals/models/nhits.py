"""N-HiTS forecaster (Challu et al., "N-HiTS: Neural Hierarchical Interpolation for Time Series
Forecasting", AAAI 2023).

Each block max-pools its input with its own kernel (multi-rate input sampling), an MLP maps the
pooled window to backcast and forecast coefficients at a reduced rate, and linear interpolation
expands them to the full window / horizon (hierarchical interpolation). Blocks are doubly
residual: the next block sees the input minus this block's backcast, and the forecasts are summed.
Stacks run from coarse (large kernel, few coefficients) to fine, as in the paper.

The window may hold several channels (the target's history plus covariates). All channels are
pooled and fed to the MLP, and the backcast covers every channel, so the doubly residual update
applies to the whole window. The forecast is of the single target series. A downsampling factor
`d` means `ceil(H / d)` forecast coefficients, i.e. the paper's expressiveness ratio r = 1 / d.
The last block has no backcast head because nothing would use its residual.

With `distributional=True` every block's forecast head gives two coefficient rows, one for the mean and
one for log σ of each horizon step, both interpolated the same way and summed over blocks (log σ adds,
so each block scales σ); the model then maps windows to `(B, 2, H)`: mean and log σ per step.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def interpolate(coefficients: torch.Tensor, size: int) -> torch.Tensor:
    """Linear interpolation of `(B, K, n)` coefficients to `(B, K, size)` points, as in the paper's g(θ)."""
    if coefficients.shape[-1] == size:
        return coefficients
    return F.interpolate(coefficients, size=size, mode="linear", align_corners=False)


class NHITSBlock(nn.Module):
    """One N-HiTS block: MaxPool1d → MLP → coefficients → interpolated backcast and forecast."""

    def __init__(
        self,
        window: int,
        channels: int,
        horizon: int,
        *,
        pool_kernel: int,
        freq_downsample: int,
        hidden_size: int,
        mlp_layers: int,
        dropout: float,
        backcast: bool,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        if min(window, channels, horizon, pool_kernel, freq_downsample, hidden_size, mlp_layers) < 1:
            raise ValueError("N-HiTS block sizes must all be positive")
        self.window = window
        self.channels = channels
        self.horizon = horizon
        self.outputs = outputs
        self.pool = nn.MaxPool1d(kernel_size=pool_kernel, stride=pool_kernel, ceil_mode=True)
        pooled = math.ceil(window / pool_kernel)
        self.n_forecast_coefficients = math.ceil(horizon / freq_downsample)
        self.n_backcast_coefficients = math.ceil(window / freq_downsample) if backcast else 0
        layers: list[nn.Module] = []
        width = channels * pooled
        for _ in range(mlp_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_size
        self.mlp = nn.Sequential(*layers)
        self.theta_f = nn.Linear(hidden_size, outputs * self.n_forecast_coefficients)
        self.theta_b = nn.Linear(hidden_size, channels * self.n_backcast_coefficients) if backcast else None

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Backcast `(B, C, n_b)` (None for the last block) and forecast `(B, outputs, n_f)` coefficients of
        `(B, C, L)`."""
        pooled: torch.Tensor = self.pool(x)
        hidden: torch.Tensor = self.mlp(pooled.flatten(1))
        theta_f: torch.Tensor = self.theta_f(hidden)
        theta_f = theta_f.view(-1, self.outputs, self.n_forecast_coefficients)
        if self.theta_b is None:
            return None, theta_f
        theta_b: torch.Tensor = self.theta_b(hidden)
        return theta_b.view(-1, self.channels, self.n_backcast_coefficients), theta_f

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Backcast `(B, C, L)` (None for the last block) and forecast of a `(B, C, L)` window: `(B, H)`, or
        `(B, outputs, H)` with several outputs."""
        theta_b, theta_f = self.coefficients(x)
        forecast = interpolate(theta_f, self.horizon)
        if self.outputs == 1:
            forecast = forecast.squeeze(1)
        backcast = None if theta_b is None else interpolate(theta_b, self.window)
        return backcast, forecast


class NHITS(nn.Module):
    """Stacks of N-HiTS blocks; maps `(B, L, C)` windows to a `(B, H)` forecast of the target, or with
    `distributional=True` to `(B, 2, H)`: the mean and log σ of every step."""

    def __init__(
        self,
        window: int,
        channels: int,
        horizon: int,
        *,
        pool_kernels: Sequence[int] = (4, 2, 1),
        freq_downsample: Sequence[int] = (4, 2, 1),
        blocks_per_stack: int = 1,
        hidden_size: int = 128,
        mlp_layers: int = 2,
        dropout: float = 0.0,
        distributional: bool = False,
    ) -> None:
        super().__init__()
        if len(pool_kernels) != len(freq_downsample) or not pool_kernels:
            raise ValueError("pool_kernels and freq_downsample need one entry per stack")
        if blocks_per_stack < 1:
            raise ValueError("blocks_per_stack must be positive")
        self.window = window
        self.channels = channels
        self.horizon = horizon
        self.distributional = distributional
        specs = [(k, d) for k, d in zip(pool_kernels, freq_downsample, strict=True) for _ in range(blocks_per_stack)]
        self.blocks = nn.ModuleList(
            NHITSBlock(
                window,
                channels,
                horizon,
                pool_kernel=k,
                freq_downsample=d,
                hidden_size=hidden_size,
                mlp_layers=mlp_layers,
                dropout=dropout,
                backcast=i < len(specs) - 1,
                outputs=2 if distributional else 1,
            )
            for i, (k, d) in enumerate(specs)
        )

    def block_forecasts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's `(B, H)` (distributional: `(B, 2, H)`) forecast; their sum is the model's forecast
        (doubly residual stacking)."""
        if x.dim() != 3 or x.shape[1:] != (self.window, self.channels):
            raise ValueError(f"expected (B, {self.window}, {self.channels}) windows, got {tuple(x.shape)}")
        residual = x.transpose(1, 2)
        forecasts: list[torch.Tensor] = []
        for block in self.blocks:
            backcast, forecast = block(residual)
            forecasts.append(forecast)
            if backcast is not None:
                residual = residual - backcast
        return forecasts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast `(B, H)` (distributional: `(B, 2, H)`, mean and log σ) of `(B, L, C)` windows."""
        forecasts = self.block_forecasts(x)
        total = forecasts[0]
        for forecast in forecasts[1:]:
            total = total + forecast
        return total
