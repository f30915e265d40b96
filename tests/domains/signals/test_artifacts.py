"""An ensemble artifact round-trips: same probabilities after load; tampering is refused; the meta layer
travels inside it, and an artifact without one says so."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.domains.learning.backtest import served_barriers
from app.domains.learning.dataset import split_by_time, symbol_rows
from app.domains.learning.pipeline import MarketSeries, train_meta_layer
from app.domains.learning.training import fit_models, predictions
from app.domains.markets.candles import Candles, Funding
from app.domains.signals.artifacts import ENSEMBLE_FILE, ArtifactMismatch, load_ensemble, load_meta, save_ensemble
from app.domains.signals.meta import sides_from_probabilities
from app.domains.signals.modelset import TrainingConfig


def test_save_load_gives_identical_predictions(btc_candles: Candles, btc_funding: Funding, tmp_path: Path) -> None:
    config = TrainingConfig(torch_epochs=1, window=24)
    rows = symbol_rows(btc_candles, btc_funding, config)
    train, test = split_by_time([rows], int(rows.timestamp[int(len(rows.y) * 0.8)]), config.embargo_hours)
    trained = fit_models(train, config)
    saved = save_ensemble(trained, tmp_path / "ensemble", {"note": "test"})
    loaded, metadata = load_ensemble(tmp_path / "ensemble")
    assert metadata == {"note": "test"} and len(saved["sha256"]) == 64
    before, after = predictions(trained, test), predictions(loaded, test)
    assert set(before) == set(after)
    assert loaded.ensemble == trained.ensemble and loaded.ensemble.evidence == trained.ensemble.evidence
    assert loaded.fit_info["slices"] == trained.fit_info["slices"]
    for kind in ("nhits", "patchtst"):  # the distributional heads come back with their per-row σ
        assert loaded.forecasters[kind].config.distributional and loaded.forecasters[kind].config.horizon == 4
        np.testing.assert_array_equal(
            loaded.forecasters[kind].predict(test.windows), trained.forecasters[kind].predict(test.windows)
        )
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-12, err_msg=name)
    for path in (tmp_path / "ensemble").rglob("*"):
        if path.is_file():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"

    weights = tmp_path / "ensemble" / "members" / "xgboost" / "model.ubj"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(ArtifactMismatch, match="sha256"):
        load_ensemble(tmp_path / "ensemble")


def test_the_meta_layer_round_trips_inside_the_artifact_and_its_absence_says_so(
    btc_candles: Candles, btc_funding: Funding, tmp_path: Path
) -> None:
    config = TrainingConfig(torch_epochs=1, window=24)
    rows = symbol_rows(btc_candles, btc_funding, config)
    test_from = int(rows.timestamp[int(len(rows.y) * 0.8)])
    train, test = split_by_time([rows], test_from, config.embargo_hours)
    trained = fit_models(train, config)
    layer = train_meta_layer([MarketSeries(btc_candles, btc_funding)], train, config, served_barriers(), test_from)
    assert layer.model is not None, layer.absent

    save_ensemble(trained, tmp_path / "with", {"note": "meta"}, meta=layer.model)
    loaded = load_meta(tmp_path / "with")
    assert loaded.absent is None and loaded.model is not None
    ensemble = predictions(trained, test)["ensemble"]
    sides = sides_from_probabilities(ensemble)
    before = layer.model.predict_proba(test.x, ensemble, sides)
    after = loaded.model.predict_proba(test.x, ensemble, sides)
    np.testing.assert_array_equal(np.isnan(after), sides == 0)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)
    assert loaded.model.barriers == layer.model.barriers and loaded.model.base_rate == layer.model.base_rate
    load_ensemble(tmp_path / "with")  # the members load as before

    save_ensemble(trained, tmp_path / "without", {"note": "none"}, meta_absent="too few rows")
    absent = load_meta(tmp_path / "without")
    assert absent.model is None and absent.absent == "no meta layer in without: too few rows"
    older = tmp_path / "older"  # an artifact written before the meta layer existed
    save_ensemble(trained, older, {})
    document = json.loads((older / ENSEMBLE_FILE).read_text())
    del document["meta_absent"]
    (older / ENSEMBLE_FILE).write_text(json.dumps(document))
    assert load_meta(older).absent == "no meta layer in older: the artifact predates the meta layer"
    load_ensemble(older)

    weights = tmp_path / "with" / "members" / "meta" / "model.txt"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(ValueError, match="sha256"):
        load_meta(tmp_path / "with")


def test_an_artifact_of_the_older_format_is_refused_with_a_reason(
    btc_candles: Candles, btc_funding: Funding, tmp_path: Path
) -> None:
    """Format 1 (forecasters with one constant residual σ) would load and be read with the wrong error model."""
    config = TrainingConfig(torch_epochs=1, window=24)
    rows = symbol_rows(btc_candles, btc_funding, config)
    train, _ = split_by_time([rows], int(rows.timestamp[-1]) + 1, 0)
    save_ensemble(fit_models(train, config), tmp_path / "old", {})
    document = json.loads((tmp_path / "old" / ENSEMBLE_FILE).read_text())
    del document["format"]  # as format-1 artifacts were written
    document["residual_std"] = {"nhits": 0.01, "patchtst": 0.01}
    (tmp_path / "old" / ENSEMBLE_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactMismatch, match=r"format 1\b.*retrain"):
        load_ensemble(tmp_path / "old")
