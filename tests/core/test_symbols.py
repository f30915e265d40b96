"""The one symbol matching rule, and that every resolver uses it (the catalog, signals, precision)."""

import pytest

from app.core.symbols import exchange_id, find_symbol
from app.domains.execution.precision import resolve_symbol
from app.domains.markets.catalog import MarketCatalog, UnknownSymbol

LISTED = ["BTC/USDT:USDT", "ETH/USDT:USDT", "1000PEPE/USDT:USDT"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTC/USDT:USDT", "BTC/USDT:USDT"),
        (" btc/usdt:usdt ", "BTC/USDT:USDT"),
        ("BTCUSDT", "BTC/USDT:USDT"),
        ("ethusdt", "ETH/USDT:USDT"),
        ("1000pepeusdt", "1000PEPE/USDT:USDT"),
        ("BTC/USDT", None),  # the spot symbol is another market
        ("BTCUSD", None),
        ("", None),
        ("BTC\x00USDT", None),
    ],
)
def test_what_a_user_may_type(text: str, expected: str | None) -> None:
    assert find_symbol(text, LISTED) == expected


def test_exchange_id() -> None:
    assert exchange_id("BTC/USDT:USDT") == "BTCUSDT" and exchange_id("1000pepe/usdt:usdt") == "1000PEPEUSDT"


def test_the_catalog_and_the_precision_helper_resolve_alike() -> None:
    catalog = MarketCatalog.load()
    for symbol in catalog.symbols():
        for text in (symbol, symbol.lower(), exchange_id(symbol), exchange_id(symbol).lower()):
            assert catalog.resolve(text).symbol == symbol == resolve_symbol(text)
    with pytest.raises(UnknownSymbol):
        catalog.resolve("NOPEUSDT")
