"""Amount and price rounding through ccxt on the bundled markets, offline.

Expected values are the ones in shared/data/exchange/README.md (a run of ccxt with networking disabled).
"""

import decimal
import math
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import ccxt
import pytest

from app.domains.execution import precision
from app.domains.execution.margin import UnknownSymbolError
from app.domains.execution.precision import (
    PrecisionError,
    amount_to_precision,
    get_exchange,
    price_to_precision,
    resolve_symbol,
)

README_EXAMPLES = [
    # symbol, amount in → out (truncated), price in → out (rounded)
    ("BTC/USDT:USDT", 0.0123456, D("0.012"), 43210.94, D("43210.9")),
    ("ETH/USDT:USDT", 1.23456, D("1.234"), 2345.6789, D("2345.68")),
    ("XRP/USDT:USDT", 123.456, D("123.4"), 0.612345, D("0.6123")),
    ("DOGE/USDT:USDT", 1234.56, D("1234"), 0.0812345, D("0.08123")),
    ("ADA/USDT:USDT", 12.7, D("12"), 0.456789, D("0.4568")),
    ("LTC/USDT:USDT", 0.12345, D("0.123"), 71.239, D("71.24")),
    ("TRX/USDT:USDT", 99.9, D("99"), 0.1034567, D("0.10346")),
]


@pytest.mark.parametrize(("symbol", "amount", "amount_out", "price", "price_out"), README_EXAMPLES)
def test_readme_examples(symbol: str, amount: float, amount_out: D, price: float, price_out: D) -> None:
    binance_id = symbol.split(":")[0].replace("/", "")
    for name in (symbol, binance_id):
        out_amount = amount_to_precision(name, amount)
        out_price = price_to_precision(name, price)
        assert type(out_amount) is D and out_amount == amount_out
        assert type(out_price) is D and out_price == price_out
        # Decimal in gives the same
        assert amount_to_precision(name, D(str(amount))) == amount_out
        assert price_to_precision(name, D(str(price))) == price_out


def test_amounts_truncate_and_prices_round() -> None:
    assert amount_to_precision("BTCUSDT", 0.0129) == D("0.012")  # truncated, not rounded to 0.013
    assert price_to_precision("BTCUSDT", 43210.96) == D("43211")  # rounded up, not truncated
    assert price_to_precision("BTCUSDT", D("43210.95")) == D("43211")  # half up
    assert price_to_precision("BTCUSDT", D("43210.9499")) == D("43210.9")
    assert amount_to_precision("DOGEUSDT", D("1E+3")) == D(1000)  # exponent notation reaches ccxt as plain digits


def test_symbol_forms() -> None:
    assert resolve_symbol("BTCUSDT") == "BTC/USDT:USDT"
    assert resolve_symbol(" btcusdt ") == "BTC/USDT:USDT"
    assert resolve_symbol("eth/usdt:usdt") == "ETH/USDT:USDT"
    assert resolve_symbol("XRP/USDT:USDT") == "XRP/USDT:USDT"


@pytest.mark.parametrize("symbol", ["SOLUSDT", "BTC/USDT", "BTCUSD_PERP", ""])
def test_unknown_symbol(symbol: str) -> None:
    with pytest.raises(UnknownSymbolError, match="unknown symbol"):
        amount_to_precision(symbol, 1.0)
    with pytest.raises(KeyError):
        price_to_precision(symbol, 1.0)


def test_below_one_step_is_refused() -> None:
    with pytest.raises(PrecisionError, match=r"amount 0\.0004 of BTC/USDT:USDT"):
        amount_to_precision("BTCUSDT", 0.0004)  # README: raises InvalidOrder in ccxt
    with pytest.raises(PrecisionError, match="price"):
        price_to_precision("BTCUSDT", D("0.04"))  # rounds to 0 at one decimal place
    with pytest.raises(ValueError):
        amount_to_precision("DOGEUSDT", 0.9)


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, D("NaN"), D("-0.5")])
def test_invalid_values(value: float | D) -> None:
    with pytest.raises(ValueError, match="amount"):
        amount_to_precision("BTCUSDT", value)
    with pytest.raises(ValueError, match="price"):
        price_to_precision("BTCUSDT", value)


def test_not_a_number() -> None:
    with pytest.raises(TypeError):
        amount_to_precision("BTCUSDT", "1")  # type: ignore[arg-type]


def test_the_decimal_context_is_left_alone() -> None:
    # ccxt's decimal_to_precision sets ROUND_HALF_UP and an Underflow trap on the current context; it must not
    # leak into the app's Decimal math. Start from a fresh default context so an earlier leak cannot hide one.
    with decimal.localcontext(decimal.Context()) as context:
        price_to_precision("BTCUSDT", 43210.95)
        amount_to_precision("BTCUSDT", 0.0123456)
        assert context.rounding == decimal.ROUND_HALF_EVEN
        assert not context.traps[decimal.Underflow]


def test_one_cached_exchange_in_decimal_places_mode() -> None:
    client = get_exchange()
    assert client is get_exchange()
    assert isinstance(client, ccxt.binanceusdm)
    assert client.precisionMode == ccxt.DECIMAL_PLACES
    assert sorted(client.markets) == [
        "ADA/USDT:USDT",
        "BTC/USDT:USDT",
        "DOGE/USDT:USDT",
        "ETH/USDT:USDT",
        "LTC/USDT:USDT",
        "TRX/USDT:USDT",
        "XRP/USDT:USDT",
    ]


@pytest.fixture
def fresh_exchange() -> Iterator[None]:
    precision._exchange.cache_clear()
    yield
    precision._exchange.cache_clear()


def test_no_network_call_is_ever_attempted(monkeypatch: pytest.MonkeyPatch, fresh_exchange: None) -> None:
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def _refuse(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"network: {name} was called")

        return _refuse

    # Every ccxt request goes through Exchange.fetch; load_markets is what would fetch exchangeInfo.
    monkeypatch.setattr(ccxt.Exchange, "fetch", refuse("fetch"))
    monkeypatch.setattr(ccxt.binanceusdm, "load_markets", refuse("load_markets"))
    monkeypatch.setattr(ccxt.binanceusdm, "fetch_markets", refuse("fetch_markets"))
    for symbol, amount, amount_out, price, price_out in README_EXAMPLES:
        assert amount_to_precision(symbol, amount) == amount_out
        assert price_to_precision(symbol, price) == price_out
    assert calls == []
    # the guard itself works: a network method on this instance is stopped at fetch (markets count as loaded)
    with pytest.raises(AssertionError, match="network"):
        get_exchange().fetch_ticker("BTC/USDT:USDT")
    assert calls == ["fetch"]
