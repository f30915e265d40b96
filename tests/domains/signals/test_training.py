"""The training run: time split with embargo, all four models, report with every baseline."""

import numpy as np

from app.domains.signals.candles import Candles, Funding
from app.domains.signals.training import (
    BASELINES,
    MODEL_KINDS,
    TrainingConfig,
    evaluate,
    fit_models,
    split_by_time,
    symbol_rows,
)

HOUR = 3_600_000
METRICS = {"accuracy", "log_loss", "brier", "net_return", "sharpe"}


def test_train_and_report_out_of_sample(btc_candles: Candles, btc_funding: Funding) -> None:
    config = TrainingConfig(torch_epochs=1, window=24)
    rows = symbol_rows(btc_candles, btc_funding, config)
    # windows end at their row: the last channel of each window is that row's own ret_1 feature
    np.testing.assert_array_equal(rows.windows[:, -1, 0], rows.x[:, 4])
    test_start = int(rows.timestamp[int(len(rows.timestamp) * 0.75)])
    train, test = split_by_time([rows], test_start, config.embargo_hours)
    assert train.timestamp.max() < test_start - config.embargo_hours * HOUR <= test.timestamp.min()
    trained = fit_models(train, config)
    assert set(trained.fit_seconds) == set(MODEL_KINDS)
    weights = trained.ensemble.weights
    assert set(weights) == set(MODEL_KINDS) and all(w >= 0 for w in weights.values())
    report = evaluate(trained, test)
    assert set(report) == {*MODEL_KINDS, "ensemble", *BASELINES}
    for name, metrics in report.items():
        assert set(metrics) == METRICS, name
    assert report["always_hold"]["net_return"] == 0.0 and report["always_hold"]["log_loss"] is None
    assert report["fallback_momentum"]["log_loss"] is None
    assert report["prior"]["net_return"] is None
    for kind in MODEL_KINDS:
        assert 0 <= report[kind]["accuracy"] <= 1  # type: ignore[operator]
        assert report[kind]["log_loss"] is not None
