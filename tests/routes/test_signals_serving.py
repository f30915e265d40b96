"""POST /api/ai/signal serves what was known at the requested time: the body as of t is the same whatever
the candles after t are; `as_of` is the newest close used; `stale` and `age_seconds` say how old it is,
against the requested time or, without one, the price feed's clock (the one POST /trades fills on)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.execution.feed import ReplayPriceFeed
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.signals.modelset import TrainedModels
from tests.domains.signals.test_serving import (
    HOUR,
    SYMBOL,
    Series,
    after,
    bundled_series,
    champion_of,
    ms,
    perturbed,
    small_trained_set,
    write_market,
)
from tests.support import running

T = "2024-03-05T00:00:00+00:00"


@pytest.fixture(scope="module")
def trained() -> TrainedModels:
    return small_trained_set()


@pytest.fixture(scope="module")
def btc() -> Series:
    return bundled_series(SYMBOL, ms(T) - 1000 * HOUR, ms(T) + 300 * HOUR)


async def signal_body(
    settings: Settings, market: ReplayMarketData, trained: TrainedModels | None, body: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    container = bootstrap(settings, market_data=market, **kwargs)
    async with running(container) as client:
        if trained is not None:
            container.signals.champion = champion_of(trained)
        response = await client.post("/api/ai/signal", json=body)
        assert response.status_code == 200, response.text
        out: dict[str, Any] = response.json()
        return out


@pytest.mark.parametrize("with_champion", [True, False], ids=["ensemble", "fallback"])
async def test_the_signal_as_of_t_is_unchanged_when_every_candle_after_t_is_perturbed(
    make_settings: Callable[..., Settings], tmp_path: Path, btc: Series, trained: TrainedModels, with_champion: bool
) -> None:
    model = trained if with_champion else None
    request = {"symbol": "BTCUSDT", "as_of": T, "leverage": 2}
    original = await signal_body(make_settings(), write_market(tmp_path / "original", btc), model, request)
    assert original["source"] == ("ensemble" if with_champion else "fallback_momentum")
    assert (original["as_of"], original["age_seconds"], original["stale"]) == ("2024-03-05T00:00:00Z", 0.0, False)
    changed = perturbed(btc, after(btc, ms(T)), ms(T), seed=11)
    again = await signal_body(make_settings(), write_market(tmp_path / "perturbed", changed), model, request)
    assert again == original
    # the control: the candle that closes at t does count
    closing_at_t = np.asarray(btc.candles.timestamp == ms(T) - HOUR)
    moved = perturbed(btc, closing_at_t, None, seed=12)
    differs = await signal_body(make_settings(), write_market(tmp_path / "moved", moved), model, request)
    assert differs["price"] != original["price"] and differs["as_of"] == original["as_of"]
    if with_champion:
        votes = {v["kind"]: v for v in original["votes"]}
        assert (votes["lightgbm"]["ran"], votes["lightgbm"]["probabilities"]) == (False, None)
        assert votes["xgboost"]["ran"] and votes["xgboost"]["probabilities"] != differs["votes"][0]["probabilities"]


async def test_a_signal_past_the_data_says_stale_with_its_age(
    make_settings: Callable[..., Settings], tmp_path: Path, btc: Series
) -> None:
    market = write_market(tmp_path / "m", btc)
    end_close = int(btc.candles.timestamp[-1]) + HOUR
    asked = datetime.fromtimestamp(end_close / 1000, tz=UTC) + timedelta(hours=5)
    body = await signal_body(make_settings(), market, None, {"symbol": "BTCUSDT", "as_of": asked.isoformat()})
    assert (body["stale"], body["age_seconds"]) == (True, 5 * 3600.0)
    assert body["as_of"] == datetime.fromtimestamp(end_close / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    relaxed = make_settings(signal_max_age_seconds=6 * 3600)
    body = await signal_body(relaxed, market, None, {"symbol": "BTCUSDT", "as_of": asked.isoformat()})
    assert (body["stale"], body["age_seconds"]) == (False, 5 * 3600.0)


@pytest.mark.parametrize(("max_age", "stale"), [(None, False), (600.0, True)])
async def test_without_as_of_the_signal_is_as_of_the_price_feeds_clock(
    make_settings: Callable[..., Settings], tmp_path: Path, btc: Series, max_age: float | None, stale: bool
) -> None:
    """On the bundled replay, now is the feed's simulated time: the signal's price is the price POST /trades
    fills at (the close of the last candle closed by then), and its age is counted on that clock."""
    market = write_market(tmp_path / "m", btc)
    feed = ReplayPriceFeed(market, datetime.fromisoformat("2024-03-05T00:20:00+00:00"))
    settings = make_settings() if max_age is None else make_settings(signal_max_age_seconds=max_age)
    body = await signal_body(settings, market, None, {"symbol": "BTCUSDT"}, price_feed=feed)
    assert body["as_of"] == "2024-03-05T00:00:00Z" and body["stale"] is stale
    assert 1200 <= body["age_seconds"] < 1200 + 60
    assert body["price"] == float(await feed.price(SYMBOL))
