"""The meta layer as the pipeline trains it: rows from out-of-sample primary predictions only, labelled with the
served rule's barriers (one max hold, shared with the backtest), and the breakeven probability of that trade."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest

from app.core.clock import HOUR_MS
from app.domains.learning.backtest import MAX_HOLD_BARS, STOP_LOSS, TAKE_PROFIT, TradeRule, breakeven_probability
from app.domains.learning.dataset import SymbolRows, split_by_time
from app.domains.learning.pipeline import (
    MarketSeries,
    MetaLayerFit,
    TrainPlan,
    load_rows,
    served_barriers,
    train_meta_layer,
)
from app.domains.learning.training import fit_models
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.signals.modelset import TrainingConfig

CONFIG = TrainingConfig(torch_epochs=1)


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Fitted:
    plan: TrainPlan
    series: list[MarketSeries]
    train: SymbolRows
    layer: MetaLayerFit


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    if not (default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz").exists():
        pytest.skip("!!! market data missing beside the repository")
    plan = TrainPlan(("BTC/USDT:USDT", "ETH/USDT:USDT"), _ms("2023-06-01"), train_days=180, test_days=20)
    parts, series = asyncio.run(load_rows(ReplayMarketData(), plan, CONFIG))
    train, _ = split_by_time(parts, plan.test_from_ms, CONFIG.embargo_hours, plan.until_ms, plan.train_from_ms)
    layer = train_meta_layer(series, train, CONFIG, served_barriers(), plan.test_from_ms)
    return Fitted(plan, series, train, layer)


def test_the_meta_model_is_trained_on_out_of_sample_primary_predictions_only(fitted: Fitted) -> None:
    layer, train = fitted.layer, fitted.train
    assert layer.model is not None and layer.absent is None and layer.rows is not None
    cross = layer.cross_fitted
    assert cross is not None and len(cross.folds) == 2
    embargo = CONFIG.embargo_hours * HOUR_MS
    # every predicted row comes from a model fitted only on rows ending an embargo before it
    assert (cross.fitted_until_ms < cross.timestamp - embargo).all()
    first_block_end = cross.folds[0]["block_from_ms"]
    assert cross.timestamp.min() >= first_block_end  # the oldest block is never predicted: no model saw less
    for fold in cross.folds:
        block = (train.timestamp >= fold["block_from_ms"]) & (train.timestamp < fold["block_until_ms"])
        fit_rows = train.timestamp < fold["block_from_ms"] - embargo
        assert fold["fit_rows"] == int(fit_rows.sum()) and not (block & fit_rows).any()
        assert fold["predicted_rows"] == int(block.sum())
    # the meta rows are a subset of the cross-fitted rows, carry exactly their probabilities, and end before the test
    rows = layer.rows
    key = {(int(t), int(g)): p for t, g, p in zip(cross.timestamp, cross.group, cross.probabilities, strict=True)}
    assert len(rows) > 500
    for t, g, p in zip(rows.timestamp, rows.group, rows.primary_probs, strict=True):
        np.testing.assert_array_equal(p, key[(int(t), int(g))])
    assert (rows.end_ms < fitted.plan.test_from_ms).all()
    assert set(np.unique(rows.sides)) <= {-1, 1}
    # ... and those are not what the champion (fitted on all training rows) says in sample on the same rows
    champion = fit_models(train, CONFIG)
    at = np.flatnonzero(np.isin(train.timestamp, rows.timestamp[rows.group == 0]) & (train.group == 0))
    in_sample = champion.ensemble.combine(champion.probabilities(train.x[at], train.windows[at]))
    assert not np.allclose(in_sample, rows.primary_probs[rows.group == 0][: len(at)])
    assert layer.seconds["meta_primary_cross_fit"] > 0 and layer.seconds["meta"] > 0
    assert layer.model.barriers["max_hold_bars"] == MAX_HOLD_BARS


def test_served_barriers_are_the_backtests_trade() -> None:
    barriers = served_barriers()
    assert barriers.max_hold_bars == TradeRule().max_hold_bars == MAX_HOLD_BARS
    assert barriers.volatility_scaled and barriers.regime_scaled  # as the live exit plan whenever there is an ATR
    assert barriers.exit.tp_distances[0] == TAKE_PROFIT and barriers.exit.sl_distance == STOP_LOSS
    assert not served_barriers(TradeRule(volatility_scaled=False)).volatility_scaled
    other = served_barriers(TradeRule(take_profit=0.01, stop_loss=0.03, max_hold_bars=6))
    assert (other.exit.tp_distances[0], other.exit.sl_distance, other.max_hold_bars) == (0.01, 0.03, 6)


def test_too_few_rows_leave_the_layer_absent_with_the_reason(fitted: Fitted) -> None:
    train = fitted.train
    layer = train_meta_layer(fitted.series, train, CONFIG, served_barriers(), int(train.timestamp[0]) + 30 * 86_400_000)
    assert layer.model is None and layer.absent is not None and "too few rows" in layer.absent
    off = train_meta_layer(fitted.series, train, CONFIG, served_barriers(), fitted.plan.test_from_ms, folds=0)
    assert off.model is None and off.absent == "the meta layer was not trained (meta_folds=0)"


def test_breakeven_probability_zeroes_the_expected_net_trade() -> None:
    rule = TradeRule()
    p = breakeven_probability(rule.take_profit, rule.stop_loss, rule.fee_rate, rule.slippage)
    assert p is not None
    ratio_win = (1 + TAKE_PROFIT) * (1 - rule.slippage)
    ratio_loss = (1 - STOP_LOSS) * (1 - rule.slippage)
    win = ratio_win - 1 - rule.fee_rate * (1 + ratio_win)
    loss = ratio_loss - 1 - rule.fee_rate * (1 + ratio_loss)
    assert p * win + (1 - p) * loss == pytest.approx(0.0, abs=1e-15)
    assert 0.5 < p < 0.55  # TP1 is nearer than the stop, but the costs make it dearer than a coin
    assert breakeven_probability(0.02, 0.02, 0.0, 0.0) == pytest.approx(0.5)
    assert breakeven_probability(None, 0.02, 0.0, 0.0) is None
