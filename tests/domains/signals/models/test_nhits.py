"""N-HiTS: shapes, multi-rate pooling, hierarchical interpolation, doubly residual stacking, gradients."""

import math

import numpy as np
import pytest
import torch

from app.domains.signals.models.nhits import NHITS, NHITSBlock


def windows(batch: int, window: int, channels: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, window, channels, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("window", "channels", "horizon"), [(32, 3, 1), (24, 1, 5), (17, 2, 7), (64, 5, 12)])
def test_forecast_shape(window: int, channels: int, horizon: int) -> None:
    torch.manual_seed(0)
    model = NHITS(window, channels, horizon)
    out = model(windows(6, window, channels))
    assert out.shape == (6, horizon)
    assert [f.shape for f in model.block_forecasts(windows(6, window, channels))] == [(6, horizon)] * 3


def test_rejects_wrong_window_shape() -> None:
    model = NHITS(32, 3, 1)
    with pytest.raises(ValueError, match="expected"):
        model(windows(2, 32, 2))


def test_block_pools_with_its_own_kernel() -> None:
    torch.manual_seed(0)
    block = NHITSBlock(
        30, 2, 4, pool_kernel=4, freq_downsample=1, hidden_size=16, mlp_layers=2, dropout=0.0, backcast=True
    )
    x = windows(3, 30, 2).transpose(1, 2)
    pooled = block.pool(x)
    assert pooled.shape == (3, 2, math.ceil(30 / 4))
    # Kernel = stride = 4, the last (partial) window covers the last two points.
    expected = torch.stack([x[..., i : i + 4].amax(dim=-1) for i in range(0, 30, 4)], dim=-1)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
    first = block.mlp[0]
    assert isinstance(first, torch.nn.Linear)
    assert first.in_features == 2 * 8


@pytest.mark.parametrize(("horizon", "downsample", "n_coefficients"), [(12, 4, 3), (12, 5, 3), (7, 2, 4), (12, 1, 12)])
def test_block_forecast_interpolates_fewer_coefficients(horizon: int, downsample: int, n_coefficients: int) -> None:
    torch.manual_seed(0)
    block = NHITSBlock(
        32,
        3,
        horizon,
        pool_kernel=2,
        freq_downsample=downsample,
        hidden_size=16,
        mlp_layers=2,
        dropout=0.0,
        backcast=True,
    )
    x = windows(4, 32, 3).transpose(1, 2)
    theta_b, theta_f = block.coefficients(x)
    backcast, forecast = block(x)
    assert block.n_forecast_coefficients == n_coefficients
    assert theta_f.shape == (4, 1, n_coefficients)
    assert forecast.shape == (4, horizon)
    assert theta_b is not None and backcast is not None
    assert theta_b.shape == (4, 3, math.ceil(32 / downsample))
    assert backcast.shape == (4, 3, 32)
    if downsample > 1:
        assert n_coefficients < horizon
    # Independent reference: linear interpolation with half-pixel centres (align_corners=False), clamped ends.
    positions = np.clip((np.arange(horizon) + 0.5) * n_coefficients / horizon - 0.5, 0, n_coefficients - 1)
    coefficients = theta_f.detach().squeeze(1).numpy()
    expected = np.stack([np.interp(positions, np.arange(n_coefficients), row) for row in coefficients])
    np.testing.assert_allclose(forecast.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_doubly_residual_stacking() -> None:
    torch.manual_seed(0)
    model = NHITS(32, 3, 6, pool_kernels=(4, 2, 1), freq_downsample=(3, 2, 1), hidden_size=16)
    model.eval()
    x = windows(5, 32, 3)
    residual = x.transpose(1, 2)
    total = torch.zeros(5, 6)
    for block in model.blocks:
        backcast, forecast = block(residual)
        total = total + forecast
        if backcast is not None:
            residual = residual - backcast
    torch.testing.assert_close(model(x), total)
    # Stacks run coarse to fine: fewer forecast coefficients first.
    assert [b.n_forecast_coefficients for b in model.blocks] == [2, 3, 6]
    assert all(b.theta_b is not None for b in model.blocks[:-1])
    assert model.blocks[-1].theta_b is None


def test_blocks_per_stack_repeats_each_rate() -> None:
    model = NHITS(32, 2, 4, pool_kernels=(4, 1), freq_downsample=(2, 1), blocks_per_stack=2, hidden_size=8)
    blocks = [b for b in model.blocks if isinstance(b, NHITSBlock)]
    assert [b.pool.kernel_size for b in blocks] == [4, 4, 1, 1]
    assert [b.n_forecast_coefficients for b in blocks] == [2, 2, 4, 4]


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = NHITS(32, 3, 4, dropout=0.1)
    model(windows(16, 32, 3)).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_distributional_multi_step_output_is_hierarchical() -> None:
    """The training setup: a 4-step horizon, stacks downsampling 4, 2, 1, so coarse blocks give 1 and 2
    coefficients per output row, the finest 4; mean and log σ rows are interpolated alike."""
    torch.manual_seed(0)
    model = NHITS(48, 4, 4, distributional=True)
    out = model(windows(5, 48, 4))
    assert out.shape == (5, 2, 4)
    assert [b.n_forecast_coefficients for b in model.blocks] == [1, 2, 4]
    x = windows(5, 48, 4).transpose(1, 2)
    _, theta_f = model.blocks[0].coefficients(x)
    assert theta_f.shape == (5, 2, 1)  # the coarsest block: one coefficient for the mean, one for log σ
    _, forecast = model.blocks[0](x)
    torch.testing.assert_close(forecast, theta_f.expand(5, 2, 4))  # one coefficient: constant over the horizon
    total = torch.stack(model.block_forecasts(windows(5, 48, 4))).sum(dim=0)
    torch.testing.assert_close(model(windows(5, 48, 4)), total)
