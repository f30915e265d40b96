"""Gradient-boosted direction classifiers: learn, round-trip without pickle, repeat."""

import pickletools
from pathlib import Path

import numpy as np
import pytest

from app.domains.signals.models.gbm import GbmClassifier, GbmConfig


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    score = 1.5 * x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=n)
    y = np.where(score > 0.7, 2, np.where(score < -0.7, 0, 1)).astype(np.int64)
    return x, y


@pytest.fixture(scope="module", params=["xgboost", "lightgbm"])
def trained(request: pytest.FixtureRequest) -> GbmClassifier:
    x, y = dataset(3000)
    xv, yv = dataset(1000, seed=1)
    model = GbmClassifier(GbmConfig(kind=request.param, n_rounds=200, min_child_samples=20))
    metrics = model.fit(x, y, xv, yv)
    assert metrics["val_log_loss"] < 0.45  # the prior (class frequencies) scores about 1.05 here
    return model


def test_learns_and_gives_probabilities(trained: GbmClassifier) -> None:
    x, y = dataset(1000, seed=2)
    p = trained.predict_proba(x)
    assert p.shape == (1000, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (p.argmax(axis=1) == y).mean() > 0.8


def test_save_load_gives_identical_predictions_without_pickle(trained: GbmClassifier, tmp_path: Path) -> None:
    saved = trained.save(tmp_path)
    weights = Path(saved["weights"])
    head = weights.read_bytes()[:2]
    assert head not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # no pickle protocol header
    with pytest.raises(Exception):  # noqa: B017 - any failure proves it is not a pickle stream
        pickletools.dis(weights.read_bytes()[:64], annotate=0)
    loaded = GbmClassifier.load(tmp_path)
    x, _ = dataset(500, seed=3)
    np.testing.assert_array_equal(loaded.predict_proba(x), trained.predict_proba(x))
    assert len(saved["sha256"]) == 64


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_same_seed_same_model(kind: str) -> None:
    x, y = dataset(1500)
    a = GbmClassifier(GbmConfig(kind=kind, n_rounds=50, min_child_samples=20))
    b = GbmClassifier(GbmConfig(kind=kind, n_rounds=50, min_child_samples=20))
    a.fit(x, y)
    b.fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x[:200]), b.predict_proba(x[:200]))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        GbmConfig(kind="random_forest")
