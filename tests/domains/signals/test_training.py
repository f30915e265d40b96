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


def test_walk_forward_retrains_before_every_fold(btc_candles: Candles, btc_funding: Funding) -> None:
    from app.domains.signals.training import walk_forward

    config = TrainingConfig(torch_epochs=1, window=24)
    rows = symbol_rows(btc_candles, btc_funding, config)
    t = rows.timestamp
    folds = [int(t[int(len(t) * 0.7)]), int(t[int(len(t) * 0.85)])]
    result = walk_forward([rows], folds, int(t[-1]) + 1, train_days=90, config=config)
    assert [f["test_start_ms"] for f in result.folds] == folds
    assert result.test_rows == sum(f["test_rows"] for f in result.folds) == int((t >= folds[0]).sum())
    for fold in result.folds:
        window_rows = (t < fold["test_start_ms"] - config.embargo_hours * HOUR) & (
            t >= fold["test_start_ms"] - 90 * 24 * HOUR
        )
        assert fold["train_rows"] == int(window_rows.sum())  # only the 90 days before the embargo
    assert set(result.report) == {*MODEL_KINDS, "ensemble", *BASELINES}
