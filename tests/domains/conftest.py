"""Real candles from ../shared for the signal, learning and sizing tests (skipped loudly if the data is absent)."""

from pathlib import Path

import pytest

from app.domains.markets.candles import Candles, Funding
from app.domains.markets.marketdata import ReplayMarketData, default_data_root


def _path(name: str) -> Path:
    path = default_data_root() / name
    if not path.exists():
        pytest.skip(f"!!! market data missing: {path} (expected ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def btc_candles() -> Candles:
    candles = ReplayMarketData.load_candles_file(_path("BTC_USDT_USDT-1h-futures.csv.gz"), "BTC/USDT:USDT", "1h")
    return candles.slice(24, 5024)  # skip the thin listing day


@pytest.fixture(scope="session")
def btc_funding() -> Funding:
    return ReplayMarketData.load_funding_file(_path("BTC_USDT_USDT-8h-funding_rate.csv.gz"), "BTC/USDT:USDT")
