"""The one dataset type: rows where every input and the label are defined, built as serving builds the last row."""

import numpy as np

from app.domains.learning.dataset import join_rows, split_by_time, stack_rows, symbol_rows
from app.domains.markets.candles import Candles, Funding
from app.domains.signals.features import WARMUP
from app.domains.signals.modelset import TrainingConfig, latest_inputs

HOUR = 3_600_000


def test_rows_are_valid_labelled_and_stack_in_time_order(btc_candles: Candles, btc_funding: Funding) -> None:
    config = TrainingConfig()
    rows = symbol_rows(btc_candles, btc_funding, config)
    first = max(WARMUP, config.window - 1)  # the forecasters' window must be warm too
    assert len(rows.y) <= len(btc_candles) - first - config.horizon
    assert np.isfinite(rows.x).all() and np.isfinite(rows.windows).all() and set(np.unique(rows.y)) == {0, 1, 2}
    both = stack_rows([rows, rows], [np.ones(len(rows.y), dtype=bool)] * 2)
    assert (np.diff(both.timestamp) >= 0).all() and len(both.y) == 2 * len(rows.y)
    assert sorted(set(both.group.tolist())) == [0, 1]


def test_a_row_has_the_inputs_serving_builds_for_its_candle(btc_candles: Candles, btc_funding: Funding) -> None:
    config = TrainingConfig()
    rows = symbol_rows(btc_candles, btc_funding, config)
    row = len(rows.y) // 2
    t = int(np.searchsorted(btc_candles.timestamp, rows.timestamp[row]))
    served = latest_inputs(btc_candles.slice(0, t + 1), btc_funding, config)
    np.testing.assert_allclose(served.x[0], rows.x[row])
    np.testing.assert_allclose(served.window[0], rows.windows[row])


def test_split_and_join_keep_the_embargo_and_the_order(btc_candles: Candles, btc_funding: Funding) -> None:
    rows = symbol_rows(btc_candles, btc_funding, TrainingConfig())
    cut = int(rows.timestamp[len(rows.y) // 2])
    train, test = split_by_time([rows], cut, embargo_hours=24)
    assert train.timestamp.max() < cut - 24 * HOUR and test.timestamp.min() >= cut
    joined = join_rows([train, test])
    assert len(joined.y) == len(train.y) + len(test.y) and (np.diff(joined.timestamp) > 0).all()
