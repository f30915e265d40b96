"""PatchTST forecaster (Nie et al., "A Time Series is Worth 64 Words: Long-term Forecasting with
Transformers", ICLR 2023).

Every channel is instance-normalised (RevIN without affine parameters), split into patches of
`patch_len` with `stride` after replicating the last value `stride` times at the end (the paper's
end padding, giving `(L - patch_len) // stride + 2` patches), embedded linearly with a learnable
positional encoding and run through a Transformer encoder. Channels are folded into the batch, so
one set of weights serves every channel and no channel sees another (channel independence). A
flatten head maps each channel's patch tokens to the horizon, then the channel's instance mean and
scale are restored.

The model forecasts one target, the continuation of channel `target_channel`; like the reference
code's multivariate-to-univariate mode, that forecast depends only on the target channel's history,
so `forward` encodes just that channel (identical to taking it from `forecast_all`).

With `distributional=True` the head gives the mean and log σ of every horizon step; the instance
normalisation is undone on both (mean · scale + level, log σ + log scale), so the predicted σ moves with
the window's own recent scale (its realised volatility when the target channel is a return).

`center=False` makes the instance normalisation scale-only (RevIN without the level): for a series that
is centred already, such as returns, subtracting the window's mean hides it from the encoder and adding it
back forces it into the forecast with coefficient 1 (a 48-hour momentum bet the model cannot undo); without
centring the encoder sees the level in scaled units and learns what it is worth.
"""

import torch
from torch import nn


class PatchTST(nn.Module):
    """Channel-independent patch Transformer; maps `(B, L, C)` windows to a `(B, H)` forecast."""

    def __init__(
        self,
        window: int,
        channels: int,
        horizon: int,
        *,
        patch_len: int = 8,
        stride: int = 4,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 64,
        dropout: float = 0.1,
        target_channel: int = 0,
        eps: float = 1e-5,
        distributional: bool = False,
        center: bool = True,
    ) -> None:
        super().__init__()
        if min(window, channels, horizon, patch_len, stride, d_model, n_heads, n_layers, d_ff) < 1:
            raise ValueError("PatchTST sizes must all be positive")
        if patch_len > window:
            raise ValueError(f"patch_len {patch_len} exceeds the window {window}")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if not 0 <= target_channel < channels:
            raise ValueError(f"target_channel {target_channel} is not one of {channels} channels")
        self.window = window
        self.channels = channels
        self.horizon = horizon
        self.patch_len = patch_len
        self.stride = stride
        self.target_channel = target_channel
        self.eps = eps
        self.distributional = distributional
        self.center = center
        self.n_patches = (window - patch_len) // stride + 2
        self.pad = nn.ReplicationPad1d((0, stride))
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=d_ff, dropout=dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(self.n_patches * d_model, (2 if distributional else 1) * horizon)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.window, self.channels):
            raise ValueError(f"expected (B, {self.window}, {self.channels}) windows, got {tuple(x.shape)}")

    def _normalise(self, series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RevIN: `(B, K, L)` series scaled per instance and channel, with the mean and scale to undo it."""
        mean = series.mean(dim=-1, keepdim=True)
        scale = torch.sqrt(series.var(dim=-1, keepdim=True, unbiased=False) + self.eps)
        if not self.center:
            mean = torch.zeros_like(mean)
        return (series - mean) / scale, mean, scale

    def patchify(self, series: torch.Tensor) -> torch.Tensor:
        """`(B, K, L)` series → `(B, K, n_patches, patch_len)` patches, end-padded by repeating the last value."""
        padded: torch.Tensor = self.pad(series)
        return padded.unfold(-1, self.patch_len, self.stride)

    def _encode(self, series: torch.Tensor) -> torch.Tensor:
        """Normalised `(B, K, L)` series → `(B, K, n_patches, d_model)` token representations."""
        patches = self.patchify(series)
        batch, k = patches.shape[:2]
        tokens: torch.Tensor = self.embed(patches.reshape(batch * k, self.n_patches, self.patch_len))
        encoded: torch.Tensor = self.encoder(self.dropout(tokens + self.position))
        return encoded.reshape(batch, k, self.n_patches, -1)

    def _forecast(self, series: torch.Tensor) -> torch.Tensor:
        """`(B, K, L)` raw series → `(B, K, H)` forecasts (distributional: `(B, K, 2, H)`, mean and log σ) in
        each channel's own units."""
        normalised, mean, scale = self._normalise(series)
        encoded = self._encode(normalised)
        forecast: torch.Tensor = self.head(encoded.flatten(2))
        if not self.distributional:
            return forecast * scale + mean
        batch, k = forecast.shape[:2]
        pair = forecast.view(batch, k, 2, self.horizon)
        return torch.stack([pair[:, :, 0] * scale + mean, pair[:, :, 1] + torch.log(scale)], dim=2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel representations `(B, C, n_patches, d_model)` of `(B, L, C)` windows."""
        self._check(x)
        normalised, _, _ = self._normalise(x.transpose(1, 2))
        return self._encode(normalised)

    def forecast_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every channel's own `(B, C, H)` (distributional: `(B, C, 2, H)`) forecast of `(B, L, C)` windows."""
        self._check(x)
        return self._forecast(x.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast `(B, H)` (distributional: `(B, 2, H)`, mean and log σ) of the target channel of `(B, L, C)`
        windows."""
        self._check(x)
        target = x[:, :, self.target_channel].unsqueeze(1)
        return self._forecast(target).squeeze(1)
