"""Real candles from ../shared for signal tests (skipped loudly if the data is absent)."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from app.domains.signals.candles import Candles, Funding

LONG_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "market" / "long"


def _read(path: Path) -> np.ndarray:
    if not path.exists():
        pytest.skip(f"!!! market data missing: {path} (expected ../shared beside the repository)")
    with gzip.open(path, "rt") as handle:
        return np.loadtxt(handle, delimiter=",", skiprows=1, ndmin=2)


@pytest.fixture(scope="session")
def btc_candles() -> Candles:
    rows = _read(LONG_DATA / "BTC_USDT_USDT-1h-futures.csv.gz")[24:5024]  # skip the thin listing day
    return Candles(
        "BTC/USDT:USDT",
        "1h",
        rows[:, 0].astype(np.int64),
        rows[:, 1].copy(),
        rows[:, 2].copy(),
        rows[:, 3].copy(),
        rows[:, 4].copy(),
        rows[:, 5].copy(),
    )


@pytest.fixture(scope="session")
def btc_funding() -> Funding:
    rows = _read(LONG_DATA / "BTC_USDT_USDT-8h-funding_rate.csv.gz")
    return Funding("BTC/USDT:USDT", rows[:, 0].astype(np.int64), rows[:, 1].copy())
