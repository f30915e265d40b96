"""TorchForecaster: learns, round-trips bit-identically without pickle, repeats, keeps torch's globals; the
distributional head's σ follows the input's volatility and its NLL falls."""

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from app.domains.signals.models.forecaster import (
    PATIENCE,
    ForecasterConfig,
    ScaledForecaster,
    TorchForecaster,
)

KINDS = ["nhits", "patchtst"]
WINDOW, CHANNELS = 32, 3
PICKLE_CALLS: list[str] = []


def record_unpickling() -> str:
    PICKLE_CALLS.append("called")
    return "payload"


class Payload:
    """Unpickling it runs `record_unpickling`: a stand-in for code smuggled into a weights file."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return record_unpickling, ()


def dataset(n: int, seed: int = 0, horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Windows of returns (~1%), ranges and volume z-scores; the target is a linear function of the last returns."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, WINDOW, CHANNELS))
    x[..., 0] = rng.normal(0.0, 0.01, (n, WINDOW))
    x[..., 1] = np.abs(rng.normal(0.0, 0.02, (n, WINDOW)))
    x[..., 2] = rng.normal(0.0, 1.0, (n, WINDOW))
    steps = [0.5 * x[:, -1, 0] - 0.3 * x[:, -2, 0] + h * 0.2 * x[:, -3, 0] for h in range(horizon)]
    y = np.stack(steps, axis=1) + rng.normal(0.0, 0.001, (n, horizon))
    return x, (y[:, 0] if horizon == 1 else y)


def config(kind: str, **kwargs: Any) -> ForecasterConfig:
    return ForecasterConfig(kind=kind, window=WINDOW, channels=CHANNELS, **kwargs)


class Trained(NamedTuple):
    model: TorchForecaster
    info: dict[str, float]


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = dataset(2000)
    return {"train": (x[:1600], y[:1600]), "val": (x[1600:], y[1600:]), "test": dataset(500, seed=1)}


@pytest.fixture(scope="module", params=KINDS)
def fitted(request: pytest.FixtureRequest, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> Trained:
    model = TorchForecaster(config(request.param))
    return Trained(model, model.fit(*data["train"], *data["val"]))


@pytest.fixture
def trained(fitted: Trained) -> TorchForecaster:
    return fitted.model


def test_learns_the_target(fitted: Trained, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    trained, info = fitted
    x_val, y_val = data["val"]
    mse = float(np.mean((trained.predict(x_val)[:, 0] - y_val) ** 2))
    assert mse < 0.25 * float(np.var(y_val))
    x_test, y_test = data["test"]
    assert float(np.mean((trained.predict(x_test)[:, 0] - y_test) ** 2)) < 0.25 * float(np.var(y_test))
    assert set(info) == {"train_loss", "val_loss", "epochs", "best_epoch"}
    # standardised Gaussian NLL without ½ log 2π: 0.5 is the training mean with the training σ
    assert info["val_loss"] < 0.0
    assert 1 <= info["best_epoch"] <= info["epochs"] <= 10


def test_predict_shapes(trained: TorchForecaster, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    x, _ = data["test"]
    out = trained.predict(x[:7])
    assert out.shape == (7, 2) and out.dtype == np.float64  # mean and σ of the cumulative target
    assert (out[:, 1] > 0).all()
    assert trained.predict_horizon(x[:7]).shape == (7, 1)
    with pytest.raises(ValueError, match="shape"):
        trained.predict(x[:7, :, :2])


def test_scaling_is_fitted_on_training_data_only(
    trained: TorchForecaster, data: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    x, y = data["train"]
    module = trained.module
    np.testing.assert_allclose(module.x_mean.numpy(), x.mean(axis=(0, 1)), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(module.x_scale.numpy(), x.std(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(module.y_mean.numpy(), [y.mean()], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(module.y_scale.numpy(), [y.std()], rtol=1e-5)


def test_save_load_gives_bit_identical_predictions(
    trained: TorchForecaster, data: dict[str, tuple[np.ndarray, np.ndarray]], tmp_path: Path
) -> None:
    saved = trained.save(tmp_path)
    assert set(saved) == {"weights", "config", "sha256"}
    assert Path(saved["weights"]) == tmp_path / "model.pt"
    assert Path(saved["config"]) == tmp_path / "config.json"
    assert saved["sha256"] == hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    loaded = TorchForecaster.load(tmp_path, expected_sha256=saved["sha256"])
    assert loaded.config == trained.config
    x, _ = data["test"]
    np.testing.assert_array_equal(loaded.predict(x), trained.predict(x))
    with pytest.raises(ValueError, match="SHA-256"):
        TorchForecaster.load(tmp_path, expected_sha256="0" * 64)


def test_weights_are_a_plain_state_dict(trained: TorchForecaster, tmp_path: Path) -> None:
    trained.save(tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True, map_location="cpu")
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state.keys() == trained.module.state_dict().keys()
    assert {"x_mean", "x_scale", "y_mean", "y_scale"} <= state.keys()


def test_pickled_objects_are_refused(trained: TorchForecaster, tmp_path: Path) -> None:
    trained.save(tmp_path)
    torch.save(Payload(), tmp_path / "model.pt")
    PICKLE_CALLS.clear()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "model.pt", weights_only=True, map_location="cpu")
    with pytest.raises(pickle.UnpicklingError):
        TorchForecaster.load(tmp_path)
    assert PICKLE_CALLS == []
    # Control: the same file does run code under full unpickling, so the refusal above is what protects us.
    assert torch.load(tmp_path / "model.pt", weights_only=False) == "payload"
    assert PICKLE_CALLS == ["called"]


def test_config_json_is_plain_json(trained: TorchForecaster, tmp_path: Path) -> None:
    trained.save(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw == json.loads(json.dumps(dataclasses.asdict(trained.config)))
    assert all(isinstance(v, str | int | float | list) for v in raw.values())
    assert raw["kind"] == trained.config.kind
    assert ForecasterConfig.from_dict(raw) == trained.config
    with pytest.raises(ValueError, match="unknown"):
        ForecasterConfig.from_dict({**raw, "pickle": True})


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_predictions(kind: str, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    x, y = data["train"]
    x_test, _ = data["test"]
    runs = []
    for seed in (3, 3, 4):
        model = TorchForecaster(config(kind, epochs=2, seed=seed))
        model.fit(x[:800], y[:800])
        runs.append(model.predict(x_test))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("kind", KINDS)
def test_early_stopping_keeps_the_best_weights(kind: str, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    x, y = data["train"]
    x_val, y_val = data["val"]
    # Validation targets are the negated truth: learning makes validation worse after the first epoch.
    stopped = TorchForecaster(config(kind, epochs=10))
    info = stopped.fit(x, y, x_val, -y_val)
    assert info["best_epoch"] == 1
    assert info["epochs"] == 1 + PATIENCE
    one_epoch = TorchForecaster(config(kind, epochs=1))
    one_epoch.fit(x, y)
    np.testing.assert_array_equal(stopped.predict(x_val), one_epoch.predict(x_val))


@pytest.mark.parametrize("kind", KINDS)
def test_multi_step_horizon(kind: str, tmp_path: Path) -> None:
    x, y = dataset(400, horizon=3)
    model = TorchForecaster(config(kind, horizon=3, epochs=1))
    with pytest.raises(ValueError, match="shape"):
        model.fit(x, y[:, 0])
    info = model.fit(x, y)
    assert np.isnan(info["val_loss"])
    assert model.predict_horizon(x).shape == (400, 3)
    mean, sigma = model.predict_steps(x)
    assert mean.shape == sigma.shape == (400, 3) and (sigma > 0).all()
    # the cumulative target: the steps' means add, their variances add (steps treated as independent)
    np.testing.assert_allclose(model.predict(x), np.column_stack([mean.sum(1), np.sqrt((sigma**2).sum(1))]))
    model.save(tmp_path)
    np.testing.assert_array_equal(TorchForecaster.load(tmp_path).predict(x), model.predict(x))


@pytest.mark.parametrize("kind", KINDS)
def test_point_head_still_available(kind: str) -> None:
    x, y = dataset(400, horizon=3)
    model = TorchForecaster(config(kind, horizon=3, epochs=1, loss="mse"))
    model.fit(x, y)
    assert model.predict(x).shape == (400,)
    np.testing.assert_allclose(model.predict(x), model.predict_horizon(x).sum(axis=1))
    with pytest.raises(ValueError, match="σ"):
        model.predict_steps(x)


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns whose volatility switches by regime, visible in the window (the returns and a range channel);
    the target's spread is that regime's volatility. Returns windows, targets and each row's true σ."""
    rng = np.random.default_rng(seed)
    vol = np.where(rng.random(n) < 0.5, 0.002, 0.02)
    x = np.empty((n, WINDOW, CHANNELS))
    x[..., 0] = rng.normal(0.0, 1.0, (n, WINDOW)) * vol[:, None]
    x[..., 1] = np.abs(rng.normal(0.0, 1.0, (n, WINDOW))) * vol[:, None]
    x[..., 2] = rng.normal(0.0, 1.0, (n, WINDOW))
    y = rng.normal(0.0, 1.0, (n, 2)) * vol[:, None]
    return x, y, vol


@pytest.mark.parametrize("kind", KINDS)
def test_distributional_sigma_follows_input_volatility(kind: str) -> None:
    x, y, _ = heteroscedastic(3000, seed=0)
    x_val, y_val, _ = heteroscedastic(600, seed=1)
    losses = []
    for epochs in (1, 6):  # the same seed: the longer run passes through the shorter one's weights
        model = TorchForecaster(config(kind, horizon=2, epochs=epochs))
        losses.append(model.fit(x, y, x_val, y_val)["val_loss"])
    assert losses[1] < losses[0]  # the validation NLL falls with training
    x_test, _, vol = heteroscedastic(1000, seed=2)
    sigma = model.predict(x_test)[:, 1]
    calm, wild = np.median(sigma[vol < 0.01]), np.median(sigma[vol > 0.01])
    # the true cumulative σ are 0.002·√2 and 0.02·√2: the predicted σ must separate the regimes clearly
    assert wild > 3 * calm
    assert 0.5 * 0.02 * np.sqrt(2) < wild < 2 * 0.02 * np.sqrt(2)


def test_fit_leaves_torch_globals_alone(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    x, y = data["train"]
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    rng_state = torch.get_rng_state()
    TorchForecaster(config("nhits", epochs=1)).fit(x[:300], y[:300])
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_unfitted_forecaster_refuses_to_predict_or_save(tmp_path: Path) -> None:
    model = TorchForecaster(config("patchtst"))
    assert isinstance(model.module, ScaledForecaster)
    with pytest.raises(RuntimeError, match="fit"):
        model.predict(np.zeros((2, WINDOW, CHANNELS)))
    with pytest.raises(RuntimeError, match="fit"):
        model.save(tmp_path)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        config("lstm")
    with pytest.raises(ValueError, match="loss"):
        config("nhits", loss="mae")
    assert config("nhits").distributional and not config("nhits", loss="huber").distributional
    with pytest.raises(ValueError, match="pool_kernels"):
        TorchForecaster(config("nhits", pool_kernels=(4, 2), freq_downsample=(1,)))


def test_traced_inference_matches_the_eager_module(trained: TorchForecaster) -> None:
    """Serving runs a traced, frozen copy; it must agree with the trained module."""
    rng = np.random.default_rng(7)
    for batch in (1, 3, 64):
        x = rng.normal(size=(batch, trained.config.window, trained.config.channels)).astype(np.float32)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            eager = trained.module.eval()(xt).numpy()  # (B, 2, H): mean and σ per step
        np.testing.assert_allclose(trained.predict_horizon(x), eager[:, 0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(trained.predict_steps(x)[1], eager[:, 1], rtol=1e-4, atol=1e-7)
    assert trained._inference is not None  # the traced copy is the one in use
