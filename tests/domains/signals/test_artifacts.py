"""An ensemble artifact round-trips: same probabilities after load; tampering is refused."""

from pathlib import Path

import numpy as np
import pytest

from app.domains.signals.artifacts import ArtifactMismatch, load_ensemble, save_ensemble
from app.domains.signals.candles import Candles, Funding
from app.domains.signals.training import TrainingConfig, fit_models, predictions, split_by_time, symbol_rows


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
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-12, err_msg=name)
    for path in (tmp_path / "ensemble").rglob("*"):
        if path.is_file():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"

    weights = tmp_path / "ensemble" / "members" / "xgboost" / "model.ubj"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(ArtifactMismatch, match="sha256"):
        load_ensemble(tmp_path / "ensemble")
