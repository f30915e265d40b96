"""PatchTST: shapes, end-padded patching, RevIN, channel independence with shared weights, gradients."""

import math

import pytest
import torch

from app.domains.signals.models.patchtst import PatchTST


def windows(batch: int, window: int, channels: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, window, channels, generator=torch.Generator().manual_seed(seed))


def model(window: int = 32, channels: int = 3, horizon: int = 1, **kwargs: int) -> PatchTST:
    torch.manual_seed(0)
    net = PatchTST(window, channels, horizon, **kwargs)
    net.eval()
    return net


@pytest.mark.parametrize(("window", "channels", "horizon"), [(32, 3, 1), (24, 1, 5), (30, 2, 7), (64, 5, 12)])
def test_output_shapes(window: int, channels: int, horizon: int) -> None:
    net = model(window, channels, horizon)
    x = windows(4, window, channels)
    assert net(x).shape == (4, horizon)
    assert net.forecast_all(x).shape == (4, channels, horizon)
    assert net.encode(x).shape == (4, channels, (window - 8) // 4 + 2, 32)


@pytest.mark.parametrize(
    ("window", "patch_len", "stride", "n_patches"), [(32, 8, 4, 8), (64, 16, 8, 8), (96, 16, 8, 12), (30, 8, 4, 7)]
)
def test_patch_count_with_end_padding(window: int, patch_len: int, stride: int, n_patches: int) -> None:
    net = model(window, 2, patch_len=patch_len, stride=stride)
    assert net.n_patches == n_patches
    series = torch.arange(2 * window, dtype=torch.float32).reshape(1, 2, window)
    patches = net.patchify(series)
    assert patches.shape == (1, 2, n_patches, patch_len)
    torch.testing.assert_close(patches[0, :, 0], series[0, :, :patch_len], rtol=0, atol=0)
    # The last patch ends in the last value repeated (replication padding of `stride` points).
    last = patches[0, :, -1]
    padded = torch.cat([series[0], series[0, :, -1:].expand(2, stride)], dim=1)
    start = (n_patches - 1) * stride
    torch.testing.assert_close(last, padded[:, start : start + patch_len], rtol=0, atol=0)
    assert (last[:, -1] == series[0, :, -1]).all()


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="patch_len"):
        PatchTST(8, 1, 1, patch_len=16)
    with pytest.raises(ValueError, match="divisible"):
        PatchTST(32, 1, 1, d_model=30, n_heads=4)


def test_equal_channels_get_equal_representations() -> None:
    net = model()
    x = windows(5, 32, 3)
    x[..., 2] = x[..., 1]
    encoded = net.encode(x)
    torch.testing.assert_close(encoded[:, 2], encoded[:, 1], rtol=0, atol=1e-6)
    assert not torch.allclose(encoded[:, 0], encoded[:, 1])


def test_channels_do_not_see_each_other() -> None:
    net = model(horizon=3)
    x = windows(5, 32, 3)
    changed = x.clone()
    changed[..., 1:] = windows(5, 32, 2, seed=1)
    torch.testing.assert_close(net.forecast_all(changed)[:, 0], net.forecast_all(x)[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(net(changed), net(x), rtol=0, atol=1e-6)


def test_permuting_channels_permutes_forecasts() -> None:
    net = model(horizon=2)
    x = windows(5, 32, 3)
    perm = [2, 0, 1]
    torch.testing.assert_close(net.forecast_all(x[..., perm]), net.forecast_all(x)[:, perm], rtol=0, atol=1e-6)
    # The target forecast is the shared per-channel model applied to whichever series sits in channel 0.
    torch.testing.assert_close(net(x[..., perm]), net.forecast_all(x)[:, 2], rtol=0, atol=1e-6)
    torch.testing.assert_close(net(x), net.forecast_all(x)[:, 0], rtol=0, atol=1e-6)


def test_instance_normalisation_makes_forecasts_affine_equivariant() -> None:
    torch.manual_seed(0)
    net = PatchTST(32, 3, 2, eps=1e-12).double().eval()  # float64 and a negligible eps: exact up to rounding
    x = windows(5, 32, 3).double()
    torch.testing.assert_close(net.forecast_all(10.0 * x - 3.0), 10.0 * net.forecast_all(x) - 3.0, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(net.forecast_all(10.0 * x - 3.0), net.forecast_all(x))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = PatchTST(32, 3, 4)
    net(windows(8, 32, 3)).square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("center", [True, False])
def test_distributional_head_scales_sigma_with_the_instance(center: bool) -> None:
    """Mean and log σ per step; scaling the input scales the mean and adds log(scale) to log σ (RevIN undone),
    with or without centring."""
    torch.manual_seed(0)
    model = PatchTST(32, 2, 4, distributional=True, center=center).eval()
    x = torch.randn(3, 32, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, scaled = model(x), model(10.0 * x)
    assert out.shape == (3, 2, 4)
    torch.testing.assert_close(scaled[:, 0], 10.0 * out[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scaled[:, 1], out[:, 1] + math.log(10.0), rtol=1e-4, atol=1e-4)


def test_scale_only_normalisation_leaves_the_level_to_the_model() -> None:
    """Centred RevIN adds a shift of the input to the forecast one for one; scale-only RevIN does not force it."""
    torch.manual_seed(0)
    x = torch.randn(3, 32, 1, generator=torch.Generator().manual_seed(1))
    centred, scale_only = PatchTST(32, 1, 2).eval(), PatchTST(32, 1, 2, center=False).eval()
    scale_only.load_state_dict(centred.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(centred(x + 0.5), centred(x) + 0.5, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(scale_only(x + 0.5), scale_only(x) + 0.5, atol=1e-3)
